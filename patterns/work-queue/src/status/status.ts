// Job status, progress and results: a work-queue stream deletes a job when it is acked, so "is job X
// done, how far along, what did it return?" needs a record of its own. One KV entry per job id:
//   queued -> running (delivery, progress) -> done (result) | dead_lettered (reason)
// Every change is a compare-and-set on the entry's revision, and a change is made only forwards: a
// late redelivery of a done job cannot turn it back into running (the worker then acks it without
// running the handler again). waitForResult() watches the entry until the job ends.
//
// Entries go away by themselves: on nats-server >= 2.11 the final state is written with a per-message
// TTL (`keepFor`, default 1h; the bucket allows message TTLs); on older servers the bucket's max age
// is `keepFor` for every entry, so a job must end within it or its status is gone (the job is not).
import { type JetStreamClient, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type KV, type KvEntry, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ApiCodes, apiCode, isNotFound, placed, replicas, versionAtLeast } from "@repo/kit";

export const STATUS_BUCKET = "job_status";

export type JobStatus =
  | { state: "queued"; at: number }
  | {
      state: "running";
      at: number;
      worker: string;
      /** The job's message in the work stream (a job published again or requeued is a later one). */
      seq?: number;
      delivery: number;
      progress?: number;
    }
  | {
      state: "done";
      at: number;
      result?: unknown;
      /** Why the result could not be kept (not JSON, too large). */
      resultError?: string;
      /** The message that ended it, as on a running entry. */
      seq?: number;
    }
  | { state: "dead_lettered"; at: number; reason: string; seq?: number };

export type FinalStatus = Extract<JobStatus, { state: "done" | "dead_lettered" }>;

/** How far along the way a state is: a change to a lower rank is refused, and a final state is final. */
const rank = { queued: 0, running: 1, done: 2, dead_lettered: 2 } as const;
export const isFinal = (s: JobStatus): s is FinalStatus => rank[s.state] === 2;

/** Per-message TTLs (and so a per-job lifetime for final states) need nats-server 2.11. */
export const perKeyTtl = (version: string | undefined) => versionAtLeast(version, "2.11.0");

export interface StatusStore {
  kv: KV;
  js: JetStreamClient;
  /** Written with each final state on servers with per-message TTLs ("1h"); undefined before 2.11. */
  finalTtl?: string;
}

/** Creates the bucket (or opens it). `keepFor` in ms: how long a final state is kept (default 1h). */
export async function setupStatus(nc: NatsConnection, keepFor = 3_600_000): Promise<StatusStore> {
  const ttl = perKeyTtl(nc.info?.version);
  const kv = await placed(() =>
    new Kvm(nc).create(STATUS_BUCKET, {
      history: 1,
      replicas: replicas(),
      // >= 2.11: entries live until their final state's TTL runs out (a delete marker then tells
      // watchers, kept 1 minute). Before: the bucket's max age is the lifetime of every entry.
      ...(ttl ? { markerTTL: 60_000 } : { ttl: keepFor }),
    }),
  );
  return { kv, js: jetstream(nc), finalTtl: ttl ? `${Math.ceil(keepFor / 1000)}s` : undefined };
}

/** The store of a bucket another process (the admin's setup) created. */
export async function openStatus(nc: NatsConnection, keepFor = 3_600_000): Promise<StatusStore> {
  const kv = await new Kvm(nc).open(STATUS_BUCKET);
  const ttl = perKeyTtl(nc.info?.version) && (await kv.status()).markerTTL > 0;
  return { kv, js: jetstream(nc), finalTtl: ttl ? `${Math.ceil(keepFor / 1000)}s` : undefined };
}

/** The store if the bucket exists (tools that work with or without job status), else undefined. */
export async function openStatusIfAny(nc: NatsConnection): Promise<StatusStore | undefined> {
  // Asked of the stream itself: opening a missing bucket fails in other ways (no responders).
  const exists = await (await jetstreamManager(nc)).streams.info(`KV_${STATUS_BUCKET}`).then(
    () => true,
    (err: unknown) => (isNotFound(err) ? false : Promise.reject(err)),
  );
  return exists ? openStatus(nc) : undefined;
}

const decode = (e: KvEntry): JobStatus => e.json<JobStatus>();

export async function getStatus(store: StatusStore, id: string): Promise<JobStatus | undefined> {
  const e = await store.kv.get(id);
  return e && e.operation === "PUT" ? decode(e) : undefined;
}

/** Records a job as queued before it is published. A job published again (same id) keeps its status. */
export async function markQueued(store: StatusStore, id: string): Promise<void> {
  await store.kv.create(id, JSON.stringify({ state: "queued", at: Date.now() } satisfies JobStatus)).catch((err: unknown) => {
    if (apiCode(err) !== ApiCodes.StreamWrongLastSequence) throw err; // it exists already: leave it
  });
}

/**
 * `next` comes from an earlier message of the job, or an earlier delivery of the same one, than the
 * run `current` records: its handler, which JavaScript cannot stop, outlived its hold on the job (it
 * was handed back at a stop deadline, its ack_wait passed, or the job was requeued while it hung). A
 * later message's deliveries start at 1 again, so the message comes first. A final state is kept back
 * only by a later message; entries without a seq (written before it was kept) compare by delivery.
 */
const superseded = (next: JobStatus, current: JobStatus) => {
  if (current.state !== "running" || (next.state !== "running" && !isFinal(next))) return false;
  if (next.seq !== undefined && current.seq !== undefined && next.seq !== current.seq) return next.seq < current.seq;
  return next.state === "running" && next.delivery < current.delivery;
};

/**
 * Writes `next` unless `keep` says the current status stays, compare-and-set on the revision (a final
 * state with the store's TTL). Returns the status the entry holds afterwards.
 */
async function compareAndSet(store: StatusStore, id: string, next: JobStatus, keep: (current: JobStatus) => boolean): Promise<JobStatus> {
  for (let tries = 0; ; tries++) {
    const e = await store.kv.get(id);
    const current = e && e.operation === "PUT" ? decode(e) : undefined;
    if (current && keep(current)) return current;
    const data = JSON.stringify(next);
    try {
      if (!e) await store.kv.create(id, data);
      else if (isFinal(next) && store.finalTtl)
        await store.js.publish(`$KV.${STATUS_BUCKET}.${id}`, data, { ttl: store.finalTtl, expect: { lastSubjectSequence: e.revision } });
      else await store.kv.update(id, data, e.revision);
      return next;
    } catch (err) {
      // Someone else changed it first: look again (bounded; they are few: one worker and its progress).
      if (apiCode(err) !== ApiCodes.StreamWrongLastSequence || tries >= 20) throw err;
    }
  }
}

/**
 * Back to queued for a requeue (so a worker does not take the old `dead_lettered`, or the `running`
 * a dead worker left, as its end), unless the job is done: a requeue run again after it ran, whose
 * publish is a duplicate, must not leave it queued for ever.
 */
export async function requeuedStatus(store: StatusStore, id: string): Promise<void> {
  await compareAndSet(store, id, { state: "queued", at: Date.now() }, (current) => current.state === "done");
}

/**
 * Moves a job's status forwards to `next`, compare-and-set on the revision. Returns the status it
 * holds afterwards: `next`, or the current one when `next` would go backwards (a final state stays,
 * and so does the run of a later message or delivery: see superseded).
 */
export function advance(store: StatusStore, id: string, next: JobStatus): Promise<JobStatus> {
  return compareAndSet(
    store,
    id,
    next,
    (current) => isFinal(current) || rank[next.state] < rank[current.state] || superseded(next, current),
  );
}

/**
 * Waits until job `id` ends and returns its final status; `onUpdate` sees every status on the way,
 * in order (progress included). Rejects after `timeoutMs` without a final status.
 */
export async function waitForResult(
  store: StatusStore,
  id: string,
  timeoutMs: number,
  onUpdate?: (s: JobStatus) => void,
): Promise<FinalStatus> {
  const watch = await store.kv.watch({ key: id });
  const timer = setTimeout(() => watch.stop(), timeoutMs);
  try {
    for await (const e of watch) {
      if (e.operation !== "PUT") continue;
      const s = decode(e);
      onUpdate?.(s);
      if (isFinal(s)) return s;
    }
  } finally {
    clearTimeout(timer);
    watch.stop();
  }
  throw new Error(`job ${id} did not end within ${timeoutMs}ms`);
}
