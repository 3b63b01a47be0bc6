// A work-queue worker in its own process, for crash tests. Prints one JSON line per finished job,
// *before* acking it, so a kill between the two shows up as a repeat, never as a loss.
import { connect } from "@nats-io/transport-node";
import { startWorker } from "@patterns/work-queue/worker";
import { pino } from "pino";

const nc = await connect({
  servers: (process.env.NATS_URL ?? "").split(","),
  name: process.env.WORKER_NAME,
  reconnectTimeWait: 100,
  maxReconnectAttempts: -1,
  // Notice a silent link (a partition holds traffic rather than closing it) within seconds, not minutes.
  pingInterval: 1_000,
  maxPingOut: 3,
  timeout: 2_000,
});
const retry = { backoffMs: (process.env.BACKOFF_MS ?? "500").split(",").map(Number), maxDeliver: Number(process.env.MAX_DELIVER ?? 4) };
const name = process.env.WORKER_NAME ?? "worker";
await startWorker({
  nc,
  name,
  log: pino({ level: "silent" }),
  retry,
  concurrency: 2,
  handler: async (job) => {
    await new Promise((r) => setTimeout(r, 3));
    if (job.task === "poison") throw new Error("poison job");
    process.stdout.write(`${JSON.stringify({ processed: job.id, worker: name })}\n`);
  },
  onOutcome: (o) => {
    if (o.kind === "dead_lettered")
      process.stdout.write(`${JSON.stringify({ dead_lettered: o.job?.id ?? `seq-${o.ctx.seq}`, worker: name })}\n`);
  },
});
process.stdout.write(`${JSON.stringify({ ready: name })}\n`);
