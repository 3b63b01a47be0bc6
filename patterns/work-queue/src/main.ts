// The demo `pnpm run pattern work-queue` runs: set up, start workers and the dlq-mover, publish a mix
// of good, flaky, poison and malformed jobs, let one worker die mid-job, then account for every job.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { parseArgs } from "node:util";
import { startDeadLetterMover } from "./dead-letter.js";
import { connectFromEnv, logSummary, replicas, runMain, UserError } from "./nats.js";
import { encodeJob, type Outgoing, publishJobs } from "./producer.js";
import { DLQ_STREAM, type RetryPolicy, setup, STREAM } from "./setup.js";
import { type Handler, type Outcome, startWorker, type Worker } from "./worker.js";

const usage = `usage: pnpm run pattern work-queue [--jobs N] [--workers N] [--json]
  --jobs N      jobs to publish (default 200)
  --workers N   competing workers, each with its own connection (default 3)
  --json        JSON log lines (also LOG_FORMAT=json)
  server: NATS_URL (default nats://127.0.0.1:4222), NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS`;

// Short waits so the demo finishes in seconds; production values are in setup.ts.
const demoRetry: RetryPolicy = { backoffMs: [250, 500, 1_000], maxDeliver: 4 };

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

runMain("work-queue", async (signal, log) => {
  const { values } = parseArgs({
    options: { jobs: { type: "string", default: "200" }, workers: { type: "string", default: "3" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) return void console.log(usage);
  const jobCount = positive("jobs", values.jobs);
  const workerCount = positive("workers", values.workers);

  const nc = await connectFromEnv("work-queue-demo");
  const jsm = await jetstreamManager(nc);
  log.info({ server: nc.info?.version, replicas: replicas() }, `connected; creating stream ${STREAM}, dead-letter stream ${DLQ_STREAM}, consumer "workers"`);
  await setup(jsm, demoRetry);

  // Tally by job id: the guarantee is that each job is processed once or dead-lettered once, never both.
  const processed = new Map<string, number>();
  const deadLettered = new Map<string, number>();
  let retries = 0;
  const onOutcome = (o: Outcome) => {
    const id = o.job?.id ?? `seq-${o.ctx.seq}`;
    if (o.kind === "processed") processed.set(id, (processed.get(id) ?? 0) + 1);
    if (o.kind === "dead_lettered") deadLettered.set(id, (deadLettered.get(id) ?? 0) + 1);
    if (o.kind === "retry") retries++;
  };

  const mover = await startDeadLetterMover(nc, log, (seq) => deadLettered.set(`seq-${seq}`, 1));
  await mover.sweep();

  const run = Date.now().toString(36);
  const crashId = `${run}-42`;
  const handler: Handler = async (job, ctx) => {
    await sleep(2 + (job.id.length % 8)); // "work"
    const n = Number(job.id.split("-")[1]);
    if (n % 50 === 13) throw new Error("cannot decode image: unsupported format"); // poison: fails every time
    if (n % 20 === 7 && ctx.delivery === 1) throw new Error("upstream timeout"); // flaky: fails once
  };

  const connections: NatsConnection[] = [];
  const workers: Worker[] = [];
  let crashed = false;
  for (let i = 1; i <= workerCount; i++) {
    const wnc = await connectFromEnv(`work-queue-worker-${i}`);
    connections.push(wnc);
    const name = `worker-${i}`;
    const crashing: Handler = async (job, ctx) => {
      if (job.id === crashId && !crashed && workerCount > 1) {
        crashed = true;
        log.warn({ worker: name, id: job.id }, "worker dies mid-job (connection closed, no ack): the job will be redelivered");
        await wnc.close();
        throw new Error("worker died");
      }
      return handler(job, ctx);
    };
    workers.push(await startWorker({ nc: wnc, name, handler: crashing, log, retry: demoRetry, onOutcome }));
  }
  log.info({ workers: workerCount }, "workers competing on one durable pull consumer");

  const jobs: Outgoing[] = Array.from({ length: jobCount }, (_, i) => encodeJob({ id: `${run}-${i}`, task: "thumbnail", input: { image: `img-${i}.png` } }));
  const malformed = Math.max(1, Math.floor(jobCount / 100));
  for (let i = 0; i < malformed; i++) jobs.push({ id: `${run}-bad-${i}`, subject: "jobs.thumbnail", data: new TextEncoder().encode(`{"id": "${run}-bad-${i}", oops`) });
  const published = await publishJobs(nc, jobs);
  log.info({ ...published, malformed }, "published jobs (a few poison, flaky and malformed among them)");

  const total = jobs.length;
  const accounted = () => new Set([...processed.keys(), ...deadLettered.keys()]).size;
  const deadline = Date.now() + 60_000;
  while (accounted() < total && Date.now() < deadline && !signal.aborted) {
    await sleep(1_000);
    log.info({ done: accounted(), of: total }, "progress");
  }

  for (const w of workers) await w.stop();
  await mover.stop();
  await Promise.all(connections.map((c) => (c.isClosed() ? undefined : c.drain())));
  const left = (await jsm.streams.info(STREAM)).state.messages;
  const inDlq = (await jsm.streams.info(DLQ_STREAM)).state.messages;
  await nc.drain();

  const both = [...processed.keys()].filter((id) => deadLettered.has(id)).length;
  const twice = [...processed.values(), ...deadLettered.values()].filter((n) => n > 1).length;
  const lost = total - accounted();
  const summary = { published: total, processed: processed.size, dead_lettered: deadLettered.size, retried: retries, worker_crashes: crashed ? 1 : 0, left_in_queue: left, dlq_stream: inDlq, lost, duplicates: both + twice };
  logSummary(log, summary, `summary: processed=${summary.processed} dead_lettered=${summary.dead_lettered} lost=${lost} duplicates=${summary.duplicates}`);
  if (lost > 0 || summary.duplicates > 0) process.exitCode = 1;
});
