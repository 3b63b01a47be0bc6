// Moving a job to the dead-letter stream, from two places:
// - a worker, when a job is malformed or fails on its last delivery (the handler saw it);
// - the dlq-mover, when a job ran out of deliveries without any ack (the worker died or hung), which
//   the server reports with a MAX_DELIVERIES advisory. Advisories are plain NATS messages, not stored,
//   and sent when the server next looks at the job, so the mover also sweeps for stranded jobs.
// Each copy carries the msg id "JOBS-<seq>", so dead-lettering the same job twice stores it once.
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { backoff, delay, headers, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { isTransient, type Logger, nextStored, type Stoppable } from "@repo/kit";
import { CONSUMER, DLQ_PREFIX, DLQ_STREAM, STREAM, SUBJECT_PREFIX } from "./setup.js";

export interface DeadLetter {
  subject: string;
  seq: number;
  deliveries: number;
  reason: string;
  /** Who moved it: a worker's name or "dlq-mover". */
  by: string;
  data: Uint8Array;
  headers?: MsgHdrs;
}

/** The header names a dead letter carries, for tools that read the DLQ. */
export const DlqHeaders = {
  Stream: "Dlq-Stream",
  Subject: "Dlq-Subject",
  Sequence: "Dlq-Sequence",
  Deliveries: "Dlq-Deliveries",
  Reason: "Dlq-Reason",
  By: "Dlq-By",
} as const;

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 512);
}

export async function deadLetter(js: JetStreamClient, d: DeadLetter): Promise<void> {
  const h = headers();
  for (const [key, values] of d.headers ?? []) {
    // Nats-* headers (msg id, expectations) belong to the original publish, not to this copy.
    if (!key.toLowerCase().startsWith("nats-")) for (const v of values) h.append(key, v);
  }
  h.set(DlqHeaders.Stream, STREAM);
  h.set(DlqHeaders.Subject, d.subject);
  h.set(DlqHeaders.Sequence, String(d.seq));
  h.set(DlqHeaders.Deliveries, String(d.deliveries));
  h.set(DlqHeaders.Reason, oneLine(d.reason));
  h.set(DlqHeaders.By, d.by);
  const subject = `${DLQ_PREFIX}${d.subject.slice(SUBJECT_PREFIX.length)}`;
  // The msg id makes retries safe: during a leader election or a reconnect, try again (about 15s in all).
  for (let attempt = 0; ; attempt++) {
    try {
      await js.publish(subject, d.data, { headers: h, msgID: `${STREAM}-${d.seq}`, expect: { streamName: DLQ_STREAM }, timeout: 2_000 });
      return;
    } catch (err) {
      if (attempt >= DLQ_PUBLISH_PAUSES.length || !isTransient(err)) throw err;
      await delay(dlqRetry.backoff(attempt));
    }
  }
}

/** Pauses between tries of a dead-letter publish that failed for a passing reason (timeout, no leader yet, 503). */
const DLQ_PUBLISH_PAUSES = [250, 500, 750, 1_000, 1_250, 1_500, 1_750];
const dlqRetry = backoff(DLQ_PUBLISH_PAUSES);

export interface DeadLetterMover extends Stoppable {
  /** Moves jobs that ran out of deliveries while no advisory reached us; returns how many. */
  sweep(): Promise<number>;
}

/** Copies a job still in the JOBS stream to the DLQ, then removes it. Returns false if it is gone. */
async function move(
  js: JetStreamClient,
  jsm: JetStreamManager,
  log: Logger,
  seq: number,
  deliveries: number,
  reason: string,
): Promise<boolean> {
  const stored = await jsm.streams.getMessage(STREAM, { seq });
  if (!stored) return false; // a worker acked or dead-lettered it already
  await deadLetter(js, { subject: stored.subject, seq, deliveries, reason, by: "dlq-mover", data: stored.data, headers: stored.header });
  await jsm.streams.deleteMessage(STREAM, seq, false).catch((err: unknown) => {
    // Gone since (a late ack took it), or not now (a timeout): a job left behind is found by a sweep,
    // and its dead letter is stored once (its msg id names the job's seq).
    log.warn({ seq, err: String(err) }, "dlq-mover: dead-lettered, but the job could not be deleted from the work stream");
  });
  return true;
}

export async function startDeadLetterMover(nc: NatsConnection, log: Logger, onMoved?: (seq: number) => void): Promise<DeadLetterMover> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const sub = nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${STREAM}.${CONSUMER}`);
  const loop = (async () => {
    for await (const m of sub) {
      const advisory = m.json<{ stream_seq: number; deliveries: number }>();
      const reason = `no ack after ${advisory.deliveries} deliveries (worker died or timed out)`;
      try {
        if (await move(js, jsm, log, advisory.stream_seq, advisory.deliveries, reason)) {
          log.warn({ seq: advisory.stream_seq, deliveries: advisory.deliveries }, "dlq-mover: dead-lettered a job no worker acked");
          onMoved?.(advisory.stream_seq);
        }
      } catch (err) {
        log.error({ seq: advisory.stream_seq, err: String(err) }, "dlq-mover: could not move job; a sweep will find it");
      }
    }
  })();
  await nc.flush(); // the subscription is registered before we return

  const snapshot = async () => {
    const ci = await jsm.consumers.info(STREAM, CONSUMER);
    const idle = ci.num_pending === 0 && ci.num_ack_pending === 0;
    return { idle, delivered: ci.delivered.stream_seq, maxDeliver: ci.config.max_deliver ?? -1 };
  };
  const remaining = async (upTo: number): Promise<number[]> => {
    const seqs: number[] = [];
    // next_by_subj (server >= 2.9) returns the first message at or after seq: a walk over what is
    // left, not over every sequence number.
    for (let seq = 1; seq <= upTo && seqs.length < 10_000; seq++) {
      const next = await nextStored(jsm, STREAM, seq, ">");
      if (!next || next.seq > upTo) break;
      seqs.push(next.seq);
      seq = next.seq;
    }
    return seqs;
  };

  return {
    async sweep() {
      // A job is stranded when it was delivered, is not awaiting an ack, and is still in the stream.
      // Take the picture twice, a second apart, so an ack in flight is not mistaken for a stranding.
      const first = await snapshot();
      if (!first.idle) return 0;
      const candidates = await remaining(first.delivered);
      if (candidates.length === 0) return 0;
      await delay(1_000);
      if (!(await snapshot()).idle) return 0;
      const still = new Set(await remaining(first.delivered));
      let moved = 0;
      for (const seq of candidates.filter((s) => still.has(s))) {
        if (await move(js, jsm, log, seq, first.maxDeliver, "ran out of deliveries while no dlq-mover listened (found by sweep)")) {
          moved++;
          onMoved?.(seq);
        }
      }
      if (moved) log.warn({ moved }, "dlq-mover: sweep dead-lettered stranded jobs");
      return moved;
    },
    async stop() {
      sub.unsubscribe();
      await loop;
    },
  };
}
