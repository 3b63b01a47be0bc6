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
  /** Wait before delivery n+1 when delivery n failed or was never acked; the last entry repeats. */
  backoffMs: number[];
  /** Handler attempts; a job whose last attempt fails (or never answers) goes to the DLQ. */
  maxDeliver: number;
  /**
   * How long a delivery may go unanswered before the server hands it out again (a worker died, or its
   * ack was lost). Default: the backoff schedule. Set it apart when failures should be retried soon
   * but a busy worker must not lose its jobs to a short ack wait (the demo).
   */
  ackWaitMs?: number;
}

/** The server's wait for each unanswered delivery (its `backoff`): ackWaitMs, or the retry schedule. */
export const ackWaits = (retry: RetryPolicy): number[] => (retry.ackWaitMs ? [retry.ackWaitMs] : retry.backoffMs);

/** Deliveries beyond maxDeliver that are only used to move a job to the DLQ. */
export const GRACE_DELIVERIES = 2;

/** Production-like defaults; the demo and the tests pass shorter waits. */
export const defaultRetry: RetryPolicy = { backoffMs: [2_000, 10_000, 30_000], maxDeliver: 5 };

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
    // The server uses backoff[0] as ack_wait and backoff[n-1] after delivery n times out, so a dead
    // worker's job comes back on this schedule. Workers nak failed jobs with retry.backoffMs.
    backoff: ackWaits(retry).map((ms) => nanos(ms)),
    max_ack_pending: 1_000, // bounds in-flight jobs across all workers
  };
}

/** Creates the streams and the consumer, or checks that existing ones fit. Idempotent. */
export async function setup(jsm: JetStreamManager, retry: RetryPolicy = defaultRetry): Promise<void> {
  await ensureStream(jsm, jobsStream);
  await ensureStream(jsm, dlqStream);
  const want = workersConsumer(retry);
  const have = await ensureConsumer(jsm, STREAM, want);
  // An existing consumer takes this run's retry policy (the demo's short waits, production's long ones).
  const policy = { max_deliver: want.max_deliver, backoff: want.backoff, max_ack_pending: want.max_ack_pending };
  const same = (Object.keys(policy) as (keyof typeof policy)[]).every((k) => JSON.stringify(have[k]) === JSON.stringify(policy[k]));
  if (!same) await jsm.consumers.update(STREAM, CONSUMER, policy);
}
