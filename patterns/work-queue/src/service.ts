// The worker service: the long-running process a starter deploys (`npm start`; the demo is
// `npm run demo`). It connects from the environment, creates or checks the streams and the consumer,
// serves jobs until SIGTERM or SIGINT, then stops pulling, finishes the jobs in hand within
// STOP_DEADLINE_MS, hands back (naks) what it could not finish, and exits 0.
//
// Environment: NATS_URL and the NATS CLI's credential and TLS variables; WORKER_CONCURRENCY (jobs at
// once, default 4); STOP_DEADLINE_MS (default 10000); HEALTH_PORT to serve GET /healthz (off by
// default; HEALTH_HOST, default 127.0.0.1: set 0.0.0.0 in a container); JOB_STATUS=1 to record each
// job's status in the job_status bucket (src/status.ts).
//
// Replace handleJob with your own code. JetStream delivers at least once: after a crash it can run
// again for the same job, so make it idempotent (see patterns/exactly-once for effects applied once).
import { createServer, type Server } from "node:http";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, type Logger, runMain } from "@repo/kit";
import { CONSUMER, STREAM, setup } from "./setup.js";
import { setupStatus } from "./status.js";
import { type Handler, startWorker } from "./worker.js";

/** Your job handler. This one stands in for real work: it waits `input.ms` (if given) and says so. */
export const handleJob: Handler = async (job) => {
  const ms = (job.input as { ms?: unknown } | undefined)?.ms;
  if (typeof ms === "number" && ms > 0) await new Promise((r) => setTimeout(r, Math.min(ms, 60_000)));
  return { handled: job.task };
};

/** GET /healthz: 200 while connected and the consumer answers, with its counts; 503 otherwise. */
function healthServer(nc: NatsConnection, log: Logger): Server {
  return createServer(async (req, res) => {
    if (req.url !== "/healthz") return void res.writeHead(404).end();
    try {
      if (nc.isClosed()) throw new Error("connection closed");
      const ci = await (await jetstreamManager(nc)).consumers.info(STREAM, CONSUMER);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, server: nc.getServer(), pending: ci.num_pending, in_progress: ci.num_ack_pending }));
    } catch (err) {
      log.warn({ err: String(err) }, "health check failed");
      res.writeHead(503, { "content-type": "application/json" }).end(JSON.stringify({ ok: false, error: String(err) }));
    }
  });
}

if (isEntry(import.meta.url)) {
  runMain("work-queue-service", async (signal, log) => {
    const concurrency = intOption("WORKER_CONCURRENCY", process.env.WORKER_CONCURRENCY ?? "4");
    const deadlineMs = intOption("STOP_DEADLINE_MS", process.env.STOP_DEADLINE_MS ?? "10000");
    const nc = await connectFromEnv("work-queue-service", { maxReconnectAttempts: -1 });
    await setup(await jetstreamManager(nc));
    const status = process.env.JOB_STATUS === "1" ? await setupStatus(nc) : undefined;
    const name = process.env.WORKER_NAME ?? `worker-${process.pid}`;
    const worker = await startWorker({
      nc,
      name,
      handler: handleJob,
      log,
      concurrency,
      status,
      onOutcome: (o) => log.info({ id: o.job?.id, seq: o.ctx.seq, delivery: o.ctx.delivery, outcome: o.kind }, o.kind),
    });
    let health: Server | undefined;
    if (process.env.HEALTH_PORT) {
      const port = intOption("HEALTH_PORT", process.env.HEALTH_PORT);
      health = healthServer(nc, log).listen(port, process.env.HEALTH_HOST ?? "127.0.0.1");
    }
    log.info({ worker: name, concurrency, stream: STREAM, consumer: CONSUMER, health: process.env.HEALTH_PORT ?? "off" }, "serving jobs");
    await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    log.info({ deadline_ms: deadlineMs }, "stopping: no new jobs; finishing the ones in hand");
    await worker.stop(deadlineMs);
    health?.close();
    await nc.drain();
    log.info("stopped");
    process.exitCode = 0; // a requested stop is a clean exit, Ctrl-C included
  });
}
