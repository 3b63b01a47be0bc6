// Publishes jobs to the JOBS stream. Each job's id is its Nats-Msg-Id, so a retried publish of the
// same job within the stream's duplicate_window is stored once.
import type { NatsConnection } from "@nats-io/transport-node";
import { pathToFileURL } from "node:url";
import { connectFromEnv, runMain } from "./nats.js";
import { publishBatch } from "./publisher.js";
import { STREAM, SUBJECT_PREFIX } from "./setup.js";
import type { Job } from "./worker.js";

export interface Outgoing {
  /** The msg id: the job's id for well-formed jobs. */
  id: string;
  subject: string;
  data: Uint8Array;
}

export function encodeJob(job: Job): Outgoing {
  return { id: job.id, subject: `${SUBJECT_PREFIX}.${job.task}`, data: new TextEncoder().encode(JSON.stringify(job)) };
}

export interface PublishResult {
  stored: number;
  duplicates: number;
}

/**
 * Publishes jobs through one fast publisher (many in flight, acks on one inbox; see publisher.ts):
 * a job whose ack times out is resent with its id, so it is stored once. Rejects, after the rest are
 * published, if any job could not be stored, saying how many and why.
 */
export async function publishJobs(nc: NatsConnection, jobs: Iterable<Outgoing>, window = 1024): Promise<PublishResult> {
  const tally = await publishBatch(nc, jobs, { stream: STREAM, window, what: "job(s)" });
  return { stored: tally.stored, duplicates: tally.duplicates };
}

// CLI: `tsx src/producer.ts [count]` publishes `count` thumbnail jobs (setup must have run: main.ts does it).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runMain("producer", async (_signal, log) => {
    const count = Number(process.argv[2] ?? 10);
    if (!Number.isInteger(count) || count < 1) throw new Error(`count must be a positive integer, got "${process.argv[2]}"`);
    const nc = await connectFromEnv("work-queue-producer");
    const run = Date.now().toString(36);
    const jobs = Array.from({ length: count }, (_, i) => encodeJob({ id: `${run}-${i}`, task: "thumbnail", input: { image: `img-${i}.png` } }));
    const res = await publishJobs(nc, jobs);
    log.info(res, "published");
    await nc.drain();
  });
}
