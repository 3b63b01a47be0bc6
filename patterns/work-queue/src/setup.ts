// The topology of the work queue, declared in one place: the JOBS stream, its dead-letter stream and
// the durable pull consumer the workers share.
import { AckPolicy, type ConsumerConfig, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, type StreamSpec } from "@repo/kit";

export const STREAM = "JOBS";
export const SUBJECT_PREFIX = "jobs";
export const DLQ_STREAM = "JOBS_DLQ";
export const DLQ_PREFIX = "dlq.jobs";
export const CONSUMER = "workers";

export interface RetryPolicy {
  /** Wait before delivery n+1 when delivery n failed (a nak with this delay); the last entry repeats. */
  backoffMs: number[];
  /** Handler attempts; a job whose last attempt fails (or never answers) goes to the DLQ. */
  maxDeliver: number;
  /**
   * How long a delivery may go unanswered before the server hands it out again (a worker died, or its
   * ack was lost). Default: the schedule's longest wait. A worker keeps the jobs in hand alive
   * (working() every third of it), so this bounds how soon a dead worker's job comes back, not how
   * long a job may run.
   */
  ackWaitMs?: number;
}

/** The consumer's ack_wait: ackWaitMs, or the schedule's longest wait. */
export const ackWait = (retry: RetryPolicy): number => retry.ackWaitMs ?? Math.max(...retry.backoffMs);

/** Deliveries beyond maxDeliver that are only used to move a job to the DLQ. */
export const GRACE_DELIVERIES = 2;

/**
 * Production-like defaults; the demo and the tests pass shorter waits. A failure is retried after
 * 2 s, 10 s, 30 s, 30 s; a dead worker's job comes back after 30 s (the server's default ack_wait),
 * while a live worker's heartbeat every 10 s keeps a long job its own.
 */
export const defaultRetry: RetryPolicy = { backoffMs: [2_000, 10_000, 30_000], maxDeliver: 5, ackWaitMs: 30_000 };

export const jobsStream: StreamSpec = {
  name: STREAM,
  subjects: [`${SUBJECT_PREFIX}.>`],
  retention: RetentionPolicy.Workqueue, // a job is removed once a worker acks (or terms) it
  storage: StorageType.File, // jobs survive a server restart
};

export const dlqStream: StreamSpec = {
  name: DLQ_STREAM,
  subjects: [`${DLQ_PREFIX}.>`],
  retention: RetentionPolicy.Limits, // dead letters stay until someone looks at them
  storage: StorageType.File,
  duplicate_window: nanos(10 * 60_000), // a retried dead-lettering within 10 min is stored once
};

export function workersConsumer(retry: RetryPolicy): Partial<ConsumerConfig> {
  return {
    durable_name: CONSUMER, // survives worker restarts; all workers share it and compete
    ack_policy: AckPolicy.Explicit, // a job is done only when its worker says so
    // The handler gets maxDeliver tries; the server allows GRACE_DELIVERIES more, so a job whose worker
    // died on its last try (or whose dead-lettering failed) reaches a worker again and is moved to the
    // DLQ without running the handler. Only if those are lost too does the MAX_DELIVERIES advisory
    // (and the dlq-mover) have to step in.
    max_deliver: retry.maxDeliver + GRACE_DELIVERIES,
    // One ack_wait, no `backoff` list: workers nak a failed job with its delay from retry.backoffMs,
    // and a nak's delay is exact only without one (with a backoff the server adds backoff[n-1] -
    // backoff[0] to it: measured 0.3 / 2.1 / 4.5 s for a 0.3 / 1.2 / 2.4 s schedule).
    ack_wait: nanos(ackWait(retry)),
    max_ack_pending: 1_000, // bounds in-flight jobs across all workers
  };
}

/**
 * Creates the streams and the consumer, or checks that existing ones fit: a consumer with another
 * retry policy is reported, never rewritten (its workers and their backoff rely on it). Idempotent.
 */
export async function setup(jsm: JetStreamManager, retry: RetryPolicy = defaultRetry): Promise<void> {
  await ensureStream(jsm, jobsStream);
  await ensureStream(jsm, dlqStream);
  await ensureConsumer(jsm, STREAM, workersConsumer(retry), ["ack_policy", "max_deliver", "ack_wait"]);
}
