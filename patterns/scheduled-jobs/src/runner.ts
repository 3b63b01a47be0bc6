// A runner: a work-queue worker for due jobs. It pulls from the "runners" consumer (due.> only), runs
// the handler, and acks; a failure is retried (nak with a delay) up to max_deliver. JetStream delivers
// at least once: a job can run again after a crash, so handlers must be idempotent.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { jsonObject, type Logger, MalformedPayload, pull, type Serving } from "@repo/kit";
import type { Job } from "./scheduler.js";
import { CONSUMER, DUE_PREFIX, STREAM } from "./setup.js";

export interface Run {
  job: Job;
  /** The schedule that produced it (due.<name>). */
  schedule: string;
  /** When the runner got it. */
  at: number;
  /** 1 on the first delivery. */
  delivery: number;
  seq: number;
}

export interface RunnerOptions {
  nc: NatsConnection;
  name: string;
  log: Logger;
  handler: (job: Job, run: Run) => Promise<void>;
  onRun?: (run: Run) => void;
}

export function parseJob(data: Uint8Array): Job {
  const job = jsonObject(data);
  if (typeof job.id !== "string" || typeof job.task !== "string") throw new MalformedPayload('expected {"id": string, "task": string}');
  return { id: job.id, task: job.task, input: job.input };
}

export async function startRunner(o: RunnerOptions): Promise<Serving> {
  const consumer = await jetstream(o.nc).consumers.get(STREAM, CONSUMER);
  const handle = async (m: JsMsg) => {
    let job: Job;
    try {
      job = parseJob(m.data);
    } catch (err) {
      o.log.warn({ runner: o.name, seq: m.seq, reason: (err as Error).message }, "malformed job: terminated");
      return m.term();
    }
    const run: Run = { job, schedule: m.subject.slice(DUE_PREFIX.length + 1), at: Date.now(), delivery: m.info.deliveryCount, seq: m.seq };
    try {
      await o.handler(job, run);
    } catch (err) {
      o.log.warn({ runner: o.name, id: job.id, delivery: run.delivery, err: String(err) }, "job failed; it will come back");
      return m.nak(1_000);
    }
    await m.ackAck().catch(() => false); // a lost ack means the job comes back: at least once
    o.onRun?.(run);
  };
  return pull(consumer, handle, { nc: o.nc, log: o.log, who: { runner: o.name }, batch: 8 });
}
