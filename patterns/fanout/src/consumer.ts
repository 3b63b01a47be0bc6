// One independent consumer (billing, shipping, analytics, ...): reads every event of its stream at its
// own pace through its own durable consumer, and acks each one after handling it. The ack is sent
// without waiting for the server's answer (as the work queue does): a lost ack only means that event
// comes back after ack_wait, which at-least-once delivery already allows. confirmAcks waits for each.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, pull, type Serving } from "@repo/kit";
import { type OrderEvent, parseEvent } from "./producer.js";
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
  /** Wait for the server to confirm each ack (about a third of the rate; see the README). */
  confirmAcks?: boolean;
}

/** The order an event is of (its key), or undefined for a malformed one (it holds nothing). */
const orderOf = (m: JsMsg): string | undefined => {
  try {
    return parseEvent(m.data).orderId;
  } catch {
    return undefined;
  }
};

export async function startSubscriber(opts: SubscriberOptions): Promise<Serving> {
  const js = jetstream(opts.nc);
  const consumer = await js.consumers.get(streams[opts.retention].name, opts.name);
  const handle = async (m: JsMsg) => {
    const event = parseEvent(m.data); // malformed: ended with its reason by the kit, never retried
    await opts.handler?.(event, m);
    if (opts.confirmAcks) await m.ackAck();
    else m.ack();
    opts.onEvent?.({ consumer: opts.name, event, subject: m.subject, seq: m.seq, redelivered: m.redelivered });
  };
  // A handler that throws gets its event again in 1 s (the kit's policy); the loop never stops for it,
  // and the later events of that order are handed back behind it (keyOf), so each order's events are
  // handled in order. Up to 256 events in hand (the consumer's max_ack_pending), each kept alive (working()) while it waits its turn.
  return pull(consumer, handle, { nc: opts.nc, log: opts.log, who: { consumer: opts.name }, batch: 256, keyOf: orderOf });
}
