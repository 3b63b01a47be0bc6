// The worker service: the long-running process a starter deploys (`npm start`; the demo is
// `npm run demo`). It creates or checks the streams and the consumer and serves jobs with handleJob
// until SIGTERM or SIGINT; then it stops pulling, finishes the jobs in hand within STOP_DEADLINE_MS,
// hands back (naks) what it could not finish, and exits 0 (the kit's runService: also HEALTH_PORT).
//
// Environment, besides the kit's: WORKER_CONCURRENCY (jobs at once, default 4); WORKER_NAME (default
// worker-<pid>); JOB_STATUS=1 to record each job's status and result in the job_status bucket.
//
// Replace handleJob with your own code. JetStream delivers at least once: after a crash it can run
// again for the same job, so make it idempotent (see patterns/exactly-once for effects applied once).
import { jetstreamManager } from "@nats-io/jetstream";
import { intOption, isEntry, runService } from "@repo/kit";
import { CONSUMER, STREAM, setup } from "./setup.js";
import { setupStatus } from "./status/status.js";
import { withStatus } from "./status/tracked.js";
import { type Handler, startWorker } from "./worker.js";

/** Your job handler. This one stands in for real work: it waits `input.ms` (if given) and says so. */
export const handleJob: Handler = async (job) => {
  const ms = (job.input as { ms?: unknown } | undefined)?.ms;
  if (typeof ms === "number" && ms > 0) await new Promise((r) => setTimeout(r, Math.min(ms, 60_000)));
  return { handled: job.task };
};

if (isEntry(import.meta.url)) {
  runService("work-queue-service", async (nc, log) => {
    const concurrency = intOption("WORKER_CONCURRENCY", process.env.WORKER_CONCURRENCY ?? "4");
    const jsm = await jetstreamManager(nc);
    await setup(jsm);
    const status = process.env.JOB_STATUS === "1" ? await setupStatus(nc) : undefined;
    const name = process.env.WORKER_NAME ?? `worker-${process.pid}`;
    const worker = await startWorker({
      nc,
      name,
      handler: status ? withStatus(handleJob, { store: status, nc, log }) : handleJob,
      log,
      concurrency,
      onOutcome: (o) => log.info({ id: o.job?.id, seq: o.ctx.seq, delivery: o.ctx.delivery, outcome: o.kind }, o.kind),
    });
    log.info({ worker: name, concurrency, stream: STREAM, consumer: CONSUMER }, "worker started");
    return {
      stop: (deadlineMs) => worker.stop(deadlineMs),
      health: async () => {
        const ci = await jsm.consumers.info(STREAM, CONSUMER);
        return { pending: ci.num_pending, in_progress: ci.num_ack_pending, paused: ci.paused ?? false };
      },
    };
  });
}
