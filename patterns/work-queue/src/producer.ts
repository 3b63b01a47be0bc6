// Publishes jobs to the JOBS stream. Each job's id is its Nats-Msg-Id, so a retried publish of the
// same job within the stream's duplicate_window is stored once.
import { type JetStreamClient, jetstream, type PubAck } from "@nats-io/jetstream";
import { pathToFileURL } from "node:url";
import { connectFromEnv, runMain } from "./nats.js";
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

/** Publishes with up to `window` acks outstanding; rejects on the first publish that fails. */
export async function publishJobs(js: JetStreamClient, jobs: Outgoing[], window = 256): Promise<PublishResult> {
  const result: PublishResult = { stored: 0, duplicates: 0 };
  const count = (ack: PubAck) => (ack.duplicate ? result.duplicates++ : result.stored++);
  for (let i = 0; i < jobs.length; i += window) {
    const acks = await Promise.all(
      jobs.slice(i, i + window).map((j) => js.publish(j.subject, j.data, { msgID: j.id, expect: { streamName: STREAM } })),
    );
    acks.forEach(count);
  }
  return result;
}

// CLI: `tsx src/producer.ts [count]` publishes `count` thumbnail jobs (setup must have run: main.ts does it).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runMain("producer", async (_signal, log) => {
    const count = Number(process.argv[2] ?? 10);
    if (!Number.isInteger(count) || count < 1) throw new Error(`count must be a positive integer, got "${process.argv[2]}"`);
    const nc = await connectFromEnv("work-queue-producer");
    const run = Date.now().toString(36);
    const jobs = Array.from({ length: count }, (_, i) => encodeJob({ id: `${run}-${i}`, task: "thumbnail", input: { image: `img-${i}.png` } }));
    const res = await publishJobs(jetstream(nc), jobs);
    log.info(res, "published");
    await nc.drain();
  });
}
