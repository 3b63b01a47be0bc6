// Idempotent publishing: every message carries a Nats-Msg-Id, so a retry after a timeout or a
// reconnect is acked as a duplicate instead of being stored twice (within the duplicate_window).
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { backoff, delay, type NatsConnection } from "@nats-io/transport-node";
import {
  connectFromEnv,
  createPublisher,
  explain,
  isEntry,
  isNoResponders,
  isTransient,
  type PublishResult,
  runMain,
  UserError,
} from "@repo/kit";
import { STREAM, SUBJECT_PREFIX } from "./setup.js";

export interface Outgoing {
  subject: string;
  /** The Nats-Msg-Id: derived from the business key (a payment id), never random per attempt. */
  id: string;
  data: Uint8Array;
}

/** One payment's publish: its stream sequence, whether the server had its id already, the attempts, or its error. */
export type Published = PublishResult & { id: string };

export interface RetryOptions {
  /** Attempts per message (default 8). */
  attempts?: number;
  /** Ack timeout of the first attempt, doubled on each retry up to 5s (default 2000). */
  timeoutMs?: number;
  /** The stream the message must land in (default PAYMENTS). */
  stream?: string;
}

const enc = new TextEncoder();
/** Pauses between attempts: short, as a restarting server or a new leader is usually back within a second. */
const publishRetry = backoff([50, 100, 150, 200, 250, 300, 350, 400, 450, 500]);

export function payment(id: string, amount: number): Outgoing {
  return { subject: `${SUBJECT_PREFIX}.captured`, id, data: enc.encode(JSON.stringify({ id, amount })) };
}

/**
 * Publishes one message, retrying with the same msg id what a retry can outlive: ack timeouts, 503s,
 * and no responders, which is what a publish sees while a restarted server is still loading its
 * streams (and, for good, on a subject no stream listens on: hence the bounded attempts). Never throws.
 */
export async function publishIdempotent(js: JetStreamClient, msg: Outgoing, opts: RetryOptions = {}): Promise<Published> {
  const attempts = opts.attempts ?? 8;
  let timeout = opts.timeoutMs ?? 2_000;
  for (let attempt = 1; ; attempt++) {
    try {
      const ack = await js.publish(msg.subject, msg.data, { msgID: msg.id, timeout, expect: { streamName: opts.stream ?? STREAM } });
      return { id: msg.id, seq: ack.seq, duplicate: ack.duplicate, attempts: attempt };
    } catch (err) {
      const text = isNoResponders(err)
        ? `no stream answered on ${msg.subject} (no responders): is the stream created and JetStream enabled?`
        : explain(err);
      if (!isTransient(err) || attempt >= attempts) return { id: msg.id, seq: 0, duplicate: false, attempts: attempt, error: text };
      await delay(publishRetry.backoff(attempt - 1));
      timeout = Math.min(timeout * 2, 5_000);
    }
  }
}

/**
 * Pipelined publishing through the fast publisher (publisher.ts): up to `window` messages in flight,
 * acks on one shared inbox, each message resent on its own with its own id after a timeout. The window
 * is the back-pressure. Results come back in input order.
 */
export async function publishPipelined(
  nc: NatsConnection,
  msgs: Outgoing[],
  opts: RetryOptions & { window?: number } = {},
): Promise<Published[]> {
  const publisher = createPublisher(nc, {
    stream: opts.stream ?? STREAM,
    window: opts.window,
    timeoutMs: opts.timeoutMs,
    attempts: opts.attempts ?? 8,
  });
  const results: Published[] = new Array(msgs.length);
  await publisher.publishAll(msgs, (r, i) => (results[i] = { ...r, id: msgs[i]!.id }));
  publisher.close();
  return results;
}

export function tally(results: Published[]) {
  return {
    stored: results.filter((r) => !r.error && !r.duplicate).length,
    duplicates: results.filter((r) => r.duplicate).length,
    retried: results.filter((r) => r.attempts > 1).length,
    failed: results.filter((r) => r.error).length,
  };
}

// CLI: `tsx src/producer.ts <payment-id> [amount]` publishes one payment; run it twice: one "stored", one "duplicate".
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const [id, amount = "100"] = process.argv.slice(2);
    if (!id) throw new UserError("usage: tsx src/producer.ts <payment-id> [amount]");
    const nc = await connectFromEnv("dedup-producer");
    const r = await publishIdempotent(jetstream(nc), payment(id, Number(amount)));
    if (r.error) throw new UserError(`could not publish ${id}: ${r.error}`);
    log.info(r, r.duplicate ? "duplicate: already stored, nothing new" : "stored");
    await nc.drain();
  });
}
