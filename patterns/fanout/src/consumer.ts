// One independent consumer (billing, shipping, analytics, ...): reads every event of its stream at its
// own pace through its own durable consumer, and acks each one after handling it.
import { jetstream, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "./nats.js";
import type { OrderEvent } from "./producer.js";
import { type Retention, streams } from "./setup.js";

export interface Received {
  consumer: string;
  event: OrderEvent;
  subject: string;
  seq: number;
  redelivered: boolean;
}

export interface SubscriberOptions {
  nc: NatsConnection;
  retention: Retention;
  name: string;
  log: Logger;
  handler?: (event: OrderEvent, m: JsMsg) => Promise<void>;
  onEvent?: (r: Received) => void;
}

export interface Subscriber {
  /** Stops pulling; events not yet acked are redelivered to this consumer when it comes back. */
  stop(): Promise<void>;
}

export async function startSubscriber(opts: SubscriberOptions): Promise<Subscriber> {
  const js = jetstream(opts.nc);
  const consumer = await js.consumers.get(streams[opts.retention].name, opts.name);
  const messages = await consumer.consume({ max_messages: 64 });
  const done = (async () => {
    for await (const m of messages) {
      const event = m.json<OrderEvent>();
      await opts.handler?.(event, m);
      // Wait for the server to confirm: on Interest retention this ack may be the one that frees the event.
      await m.ackAck();
      opts.onEvent?.({ consumer: opts.name, event, subject: m.subject, seq: m.seq, redelivered: m.redelivered });
    }
  })().catch((err: unknown) => {
    if (!opts.nc.isClosed()) opts.log.error({ consumer: opts.name, err: String(err) }, "consumer stopped on an error");
  });
  return {
    async stop() {
      await messages.close();
      await done;
    },
  };
}
