// Serving a consumer's messages one at a time until stopped: the loops every subscriber shares.
// serve() reads a long-lived consume(); pull() makes a new short fetch each round, which outlives a
// server restart on every version (a consume() was seen to go silent after a restart of 2.9/2.10).
import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { explain } from "./cli.js";
import { type Refusal, watchRefusals } from "./errors.js";
import type { Logger } from "./log.js";

/**
 * Watches for the server refusing this connection the right to pull from a consumer. A pull request is
 * a plain publish, so its refusal comes only as a connection status while the pull itself just ends
 * without messages ("heartbeats missed"). A puller asks after a failed pull: `refused()` returns the
 * refusal (to stop with one clear line) or undefined (a passing failure: pull again).
 */
export async function pullRefusals(nc: NatsConnection, consumer: Consumer): Promise<{ refused(): Refusal | undefined }> {
  const { stream_name, name } = await consumer.info(true);
  const refusals = watchRefusals(nc);
  return { refused: () => refusals.get(`$JS.API.CONSUMER.MSG.NEXT.${stream_name}.${name}`) };
}

export interface Serving {
  /** Stops pulling and waits for the message in hand; unacked messages are redelivered later. */
  stop(): Promise<void>;
}

/**
 * Hands each message of `messages` to `handle`, in order. An error (not one caused by our connection
 * closing) ends the loop with one log line naming `who`: its message was not acked, so it comes back.
 */
export function serve(
  messages: ConsumerMessages,
  handle: (m: JsMsg) => Promise<void>,
  o: { nc: NatsConnection; log: Logger; who: Record<string, string> },
): Serving {
  const loop = (async () => {
    for await (const m of messages) await handle(m);
  })().catch((err: unknown) => {
    if (!o.nc.isClosed()) o.log.error({ ...o.who, err: String(err) }, "stopped on an error");
  });
  return {
    async stop() {
      await messages.close();
      await loop;
    },
  };
}

/**
 * Fetches up to `batch` messages at a time (each pull expiring after `expiresMs`) and hands each to
 * `handle`, in order, until stop(). A failed pull (a restart, missed heartbeats) is followed by a new
 * one; an error from `handle` ends nothing either: it is logged, and the message, unacked, comes back.
 */
export async function pull(
  consumer: Consumer,
  handle: (m: JsMsg) => Promise<void>,
  o: { nc: NatsConnection; log: Logger; who: Record<string, string>; batch?: number; expiresMs?: number },
): Promise<Serving> {
  let stopping = false;
  const refusals = await pullRefusals(o.nc, consumer);
  const loop = (async () => {
    while (!stopping && !o.nc.isClosed()) {
      try {
        for await (const m of await consumer.fetch({ max_messages: o.batch ?? 8, expires: o.expiresMs ?? 2_000 })) {
          await handle(m).catch((err: unknown) => o.log.warn({ ...o.who, seq: m.seq, err: String(err) }, "not handled; it will come back"));
        }
      } catch (err) {
        if (o.nc.isClosed()) break;
        const refused = refusals.refused();
        if (refused) {
          o.log.error({ ...o.who }, explain(refused));
          break;
        }
        o.log.debug({ ...o.who, err: String(err) }, "pull failed; pulling again");
        await delay(250);
      }
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
    },
  };
}
