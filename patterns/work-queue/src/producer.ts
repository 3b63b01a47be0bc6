// Publishes jobs to the JOBS stream. Each job's id is its Nats-Msg-Id, so a retried publish of the
// same job within the stream's duplicate_window is stored once.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, type PublishResult, publishBatch, runMain, type Tally, UserError } from "@repo/kit";
import { badJob, type Job } from "./job.js";
import { STREAM, SUBJECT_PREFIX } from "./setup.js";

export interface Outgoing {
  /** The msg id: the job's id for well-formed jobs. */
  id: string;
  subject: string;
  data: Uint8Array;
}

const enc = new TextEncoder();

/** The message for a job; a job id that cannot be a KV key or a task that is not a subject token is refused (UserError). */
export function encodeJob(job: Job): Outgoing {
  const bad = badJob(job);
  if (bad) throw new UserError(bad);
  return { id: job.id, subject: `${SUBJECT_PREFIX}.${job.task}`, data: enc.encode(JSON.stringify(job)) };
}

/**
 * Publishes jobs through one fast publisher (many in flight, acks on one inbox; see publisher.ts):
 * a job whose ack times out is resent with its id, so it is stored once. Rejects, after the rest are
 * published, if any job could not be stored, saying how many and why.
 */
export function publishJobs(
  nc: NatsConnection,
  jobs: Iterable<Outgoing>,
  window = 1024,
  onResult?: (r: PublishResult, index: number) => void,
): Promise<Tally> {
  return publishBatch(nc, jobs, { stream: STREAM, window, what: "job(s)" }, onResult);
}

// CLI: `tsx src/producer.ts [count]` publishes `count` thumbnail jobs (setup must have run: main.ts does it).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const count = intOption("count", process.argv[2] ?? "10");
    const nc = await connectFromEnv("work-queue-producer");
    const run = Date.now().toString(36);
    const jobs = Array.from({ length: count }, (_, i) =>
      encodeJob({ id: `${run}-${i}`, task: "thumbnail", input: { image: `img-${i}.png` } }),
    );
    const res = await publishJobs(nc, jobs);
    log.info(res, "published");
    await nc.drain();
  });
}
