// A worker: pulls jobs from the shared durable consumer and competes with the other workers for them.
// Success -> ack (sent without waiting for the server's answer; confirmAcks waits for it). Failure ->
// nak with the retry delay, or on the last delivery -> DLQ. Malformed payload -> DLQ at once
// (retrying cannot fix it). The kit's pullIntoSlots pulls only for free slots and keeps every job in
// hand alive, so a long job is not handed to another worker while it runs.
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Delivery, type Hand, type Logger, pullIntoSlots, pullRefusals, type Stoppable, terminate } from "@repo/kit";
import { deadLetter } from "./dead-letter.js";
import { type Job, parseJob } from "./job.js";
import { ackWait, CONSUMER, defaultRetry, type RetryPolicy, STREAM } from "./setup.js";

export interface JobContext {
  seq: number;
  subject: string;
  /** 1 on the first delivery. */
  delivery: number;
  worker: string;
  /**
   * Reports how far along the job is (0..1): tells the server the job is still being worked on (its
   * ack_wait starts again); with job status, also records the progress for waitForResult's watchers.
   */
  progress(fraction: number): Promise<void>;
}

/**
 * Handles a job; what it returns is the job's result (kept by job status, if used). Returning
 * ALREADY_ENDED acks the job as one that ended before (its ack was lost), not as processed again.
 * The two optional hooks are for a wrapper that records jobs (status/tracked.ts).
 */
export type Handler = ((job: Job, ctx: JobContext) => Promise<unknown>) & {
  /** On a delivery past the last try: did its last try succeed (its ack lost)? Then it is acked, not dead-lettered. */
  doneBefore?: (job: Job) => Promise<boolean>;
  /** The job is in the DLQ now (a rejection is logged). */
  deadLettered?: (job: Job, seq: number, reason: string) => Promise<void>;
};
export const ALREADY_ENDED = Symbol("already ended");

export type Outcome =
  | { kind: "processed"; job: Job; ctx: JobContext /** With confirmAcks: whether the server confirmed the ack. */; acked?: boolean }
  | { kind: "retry"; job: Job; ctx: JobContext; reason: string; delayMs: number }
  | { kind: "dead_lettered"; job?: Job; ctx: JobContext; reason: string };

export interface WorkerOptions {
  nc: NatsConnection;
  name: string;
  handler: Handler;
  log: Logger;
  retry?: RetryPolicy;
  /** Jobs handled at once by this worker (default 1). */
  concurrency?: number;
  /**
   * Wait for the server to confirm each ack (ackAck), so the outcome says whether it landed. Either
   * way an ack that is lost means the job comes back; confirming costs a round trip per job (about
   * half the throughput in `pnpm bench`). Default false.
   */
  confirmAcks?: boolean;
  onOutcome?: (outcome: Outcome) => void;
}

/** A job's context: one object per job, its subject and seq read from the message only if asked for. */
class Context implements JobContext {
  readonly delivery: number;
  constructor(
    readonly m: Delivery,
    readonly worker: string,
  ) {
    this.delivery = m.deliveryCount;
  }
  get seq() {
    return this.m.seq;
  }
  get subject() {
    return this.m.subject;
  }
  async progress() {
    this.m.working();
  }
}

export interface Worker extends Stoppable {
  name: string;
}

export async function startWorker(opts: WorkerOptions): Promise<Worker> {
  const { nc, name, handler, log } = opts;
  const retry = opts.retry ?? defaultRetry;
  const js = jetstream(nc);
  const refusals = await pullRefusals(nc, await js.consumers.get(STREAM, CONSUMER));
  const backoff = (delivery: number) => retry.backoffMs[Math.min(delivery, retry.backoffMs.length) - 1] ?? 1_000;

  const toDlq = async (ctx: Context, job: Job | undefined, reason: string) => {
    const { m } = ctx;
    const { subject, seq, data, headers } = m;
    try {
      await deadLetter(js, { subject, seq, deliveries: ctx.delivery, reason, by: name, data, headers });
    } catch (err) {
      // Not in the DLQ yet: keep the job. If this was its last delivery the dlq-mover takes it.
      log.error({ seq, err: String(err) }, "could not dead-letter; job kept for redelivery");
      return m.nak(backoff(ctx.delivery));
    }
    if (job)
      await handler
        .deadLettered?.(job, seq, reason)
        .catch((err: unknown) => log.warn({ id: job.id, err: String(err) }, "dead-lettered, but recording it failed"));
    terminate(m, reason, nc.info?.version);
    log.warn({ worker: name, seq, id: job?.id, reason }, "dead-lettered");
    opts.onOutcome?.({ kind: "dead_lettered", job, ctx, reason });
  };

  const handle = async (m: Delivery, hand: Hand) => {
    const ctx = new Context(m, name);
    let job: Job;
    try {
      job = parseJob(m.data);
    } catch (err) {
      // Malformed: no try can fix it. On a grace delivery the reason below says what happened instead.
      if (ctx.delivery <= retry.maxDeliver) return toDlq(ctx, undefined, `malformed payload: ${(err as Error).message}`);
      return toDlq(ctx, undefined, `no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`);
    }
    if (ctx.delivery > retry.maxDeliver) {
      // A grace delivery: the handler had its tries and the last one never answered (the worker died,
      // hung, or could not reach the DLQ, or its ack was lost). Do not run it again.
      if (await handler.doneBefore?.(job)) {
        log.info({ worker: name, id: job.id, delivery: ctx.delivery }, "done on its last try, its ack lost: acked now");
        return m.ack();
      }
      return toDlq(ctx, job, `no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`);
    }
    let result: unknown;
    try {
      // Held while it runs: a stop deadline hands it back to the queue for another worker.
      result = await hand.holding(() => handler(job, ctx));
    } catch (err) {
      if (nc.isClosed()) return; // we are going away: the server redelivers the job after ack_wait
      const reason = err instanceof Error ? err.message : String(err);
      if (ctx.delivery >= retry.maxDeliver) return toDlq(ctx, job, `failed on delivery ${ctx.delivery} of ${retry.maxDeliver}: ${reason}`);
      const delayMs = backoff(ctx.delivery);
      m.nak(delayMs);
      log.info({ worker: name, id: job.id, delivery: ctx.delivery, retryInMs: delayMs, reason }, "failed, will retry");
      return opts.onOutcome?.({ kind: "retry", job, ctx, reason, delayMs });
    }
    if (result === ALREADY_ENDED) return m.ack(); // a redelivery of a job that ended: not processed again
    let acked: boolean | undefined;
    if (opts.confirmAcks)
      acked = await m.ackAck(); // false when the server did not answer in time: never throws
    else m.ack();
    opts.onOutcome?.({ kind: "processed", job, ctx, acked });
  };

  const slots = pullIntoSlots(nc, {
    stream: STREAM,
    consumer: CONSUMER,
    concurrency: opts.concurrency ?? 1,
    beatEveryMs: Math.max(100, ackWait(retry) / 3),
    handle,
    log,
    who: { worker: name },
    refused: refusals.refused,
  });
  return { name, stop: (deadlineMs) => slots.stop(deadlineMs).finally(refusals.stop) };
}
