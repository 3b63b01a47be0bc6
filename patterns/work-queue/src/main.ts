// The demo `pnpm run pattern work-queue` runs: set up, start workers and the dlq-mover, publish a mix
// of good, flaky, poison and malformed jobs, let one worker die mid-job, then account for every job.
// The guarantee it checks: every job is handled at least once and ends processed or dead-lettered
// exactly once. A handler that runs again (a crash of a worker, its connection or the server lost an
// ack) is a redelivery, counted apart: allowed by at-least-once, not a failure. A lost job is one
// neither processed, nor dead-lettered, nor still in the queue.

import { jetstreamManager } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, isNotFound, type Logger, logSummary, replicas, runMain, storedMessages } from "@repo/kit";
import { startDeadLetterMover } from "./dead-letter.js";
import { encodeJob, type Outgoing, publishJobs } from "./producer.js";
import { CONSUMER, DLQ_STREAM, type RetryPolicy, STREAM, setup } from "./setup.js";
import { type Handler, type Outcome, startWorker, type Worker } from "./worker.js";

const usage = `usage: pnpm run pattern work-queue [--jobs N] [--workers N] [--json]
  --jobs N      jobs to publish (default 200)
  --workers N   competing workers, each with its own connection (default 3)
  The demo waits while jobs keep finishing; Ctrl-C stops it early and says what is left in the queue.`;

// Short retry delays so the demo finishes in seconds (production values are in setup.ts), and an ack
// wait with room for a busy machine: a worker whose event loop stalls must not lose its jobs to others.
const demoRetry: RetryPolicy = { backoffMs: [250, 500, 1_000], maxDeliver: 4, ackWaitMs: 5_000 };
/** Stop waiting when no job has finished for this long (a server restart takes a few seconds). */
const STALL_MS = 30_000;

runMain("work-queue", async (signal, log) => {
  const options = demoOptions(usage, { jobs: 200, workers: 3 });
  if (!options) return;
  const { jobs: jobCount, workers: workerCount } = options;

  const nc = await connectFromEnv("work-queue-demo");
  const jsm = await jetstreamManager(nc);
  log.info(
    { server: nc.info?.version, replicas: replicas() },
    `connected; creating stream ${STREAM}, dead-letter stream ${DLQ_STREAM}, consumer "${CONSUMER}"`,
  );
  // The consumer gets the demo's short waits. Made here, it goes again at the end (its jobs stay in
  // the stream for the next consumer): a service started later sets up its own production policy.
  const madeHere = await jsm.consumers.info(STREAM, CONSUMER).then(
    () => false,
    (err: unknown) => (isNotFound(err) ? true : Promise.reject(err)),
  );
  await setup(jsm, demoRetry);

  // Handler runs per job id. A malformed job has no id of its own to report: its stream sequence names it.
  const idBySeq = new Map<number, string>();
  const processed = new Map<string, number>();
  const deadLettered = new Map<string, number>();
  const count = (m: Map<string, number>, id: string) => m.set(id, (m.get(id) ?? 0) + 1);
  const idOf = (seq: number) => idBySeq.get(seq) ?? `seq-${seq}`;
  let retries = 0;
  const onOutcome = (o: Outcome) => {
    const id = o.job?.id ?? idOf(o.ctx.seq);
    if (o.kind === "processed") count(processed, id);
    if (o.kind === "dead_lettered") count(deadLettered, id);
    if (o.kind === "retry") retries++;
  };

  const mover = await startDeadLetterMover(nc, log, (seq) => count(deadLettered, idOf(seq)));
  await mover.sweep();

  const run = Date.now().toString(36);
  const crashId = `${run}-42`;
  const handler: Handler = async (job, ctx) => {
    await delay(2 + (job.id.length % 8)); // "work"
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
        log.warn(
          { worker: name, id: job.id },
          "worker dies mid-job, before its handler ran (connection closed, no ack): the job comes back to another worker after ack_wait (redelivered counts only handlers run again)",
        );
        await wnc.close();
        throw new Error("worker died");
      }
      return handler(job, ctx);
    };
    workers.push(await startWorker({ nc: wnc, name, handler: crashing, log, retry: demoRetry, onOutcome }));
  }
  log.info({ workers: workerCount }, "workers competing on one durable pull consumer");

  const jobs: Outgoing[] = Array.from({ length: jobCount }, (_, i) =>
    encodeJob({ id: `${run}-${i}`, task: "thumbnail", input: { image: `img-${i}.png` } }),
  );
  const malformed = Math.max(1, Math.floor(jobCount / 100));
  for (let i = 0; i < malformed; i++) {
    jobs.push({ id: `${run}-bad-${i}`, subject: "jobs.thumbnail", data: new TextEncoder().encode(`{"id": "${run}-bad-${i}", oops`) });
  }
  const published = await publishJobs(nc, jobs, 1024, (r, i) => idBySeq.set(r.seq, jobs[i]!.id));
  log.info({ ...published, malformed }, "published jobs (a few poison, flaky and malformed among them)");

  const ids = jobs.map((j) => j.id);
  const finished = () => ids.filter((id) => processed.has(id) || deadLettered.has(id)).length;
  await waitWhileProgress(finished, ids.length, signal, log);

  await Promise.all(workers.map((w) => w.stop()));
  await mover.stop();
  await Promise.all(connections.map((c) => (c.isClosed() ? undefined : c.drain())));
  const queued = new Set((await storedMessages(jsm, STREAM)).map((m) => m.header.get("Nats-Msg-Id")));
  const inDlq = (await jsm.streams.info(DLQ_STREAM)).state.messages;
  if (madeHere) {
    await jsm.consumers.delete(STREAM, CONSUMER);
    log.info(`removed the demo's consumer "${CONSUMER}" (its waits are the demo's); jobs left stay in ${STREAM}`);
  }
  await nc.drain();

  const runs = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0) - m.size;
  const summary = {
    published: ids.length,
    processed: processed.size,
    dead_lettered: deadLettered.size,
    retried: retries,
    redelivered: runs(processed) + runs(deadLettered), // handled again after a lost ack: allowed, counted
    worker_crashes: crashed ? 1 : 0,
    left_in_queue: ids.filter((id) => queued.has(id) && !processed.has(id) && !deadLettered.has(id)).length,
    dlq_stream: inDlq,
    in_both: ids.filter((id) => processed.has(id) && deadLettered.has(id)).length,
    lost: ids.filter((id) => !processed.has(id) && !deadLettered.has(id) && !queued.has(id)).length,
  };
  const why = signal.aborted ? ` (stopped by Ctrl-C: ${summary.left_in_queue} jobs left in the queue for the next worker)` : "";
  logSummary(
    log,
    summary,
    `summary: processed=${summary.processed} dead_lettered=${summary.dead_lettered} redelivered=${summary.redelivered} left=${summary.left_in_queue} lost=${summary.lost} in_both=${summary.in_both}${why}`,
  );
  if (summary.lost > 0 || summary.in_both > 0) process.exitCode = 1;
});

/** Waits until every job finished, Ctrl-C, or no job finished for STALL_MS: a backlog of any size is waited out. */
async function waitWhileProgress(finished: () => number, total: number, signal: AbortSignal, log: Logger): Promise<void> {
  let last = -1;
  let lastChange = Date.now();
  while (!signal.aborted) {
    const done = finished();
    if (done >= total) return;
    if (done !== last) {
      last = done;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > STALL_MS) {
      return void log.warn({ done, of: total }, `no job finished for ${STALL_MS / 1000}s: stopping the demo (the rest stays queued)`);
    }
    const tick = delay(1_000);
    signal.addEventListener("abort", tick.cancel, { once: true });
    await tick;
    signal.removeEventListener("abort", tick.cancel);
    log.info({ done: finished(), of: total }, "progress");
  }
}
