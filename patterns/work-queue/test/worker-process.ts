// A worker in its own process, for the SIGKILL test: it prints "started <id>" and then holds the job.
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { startWorker } from "../src/worker.js";

const nc = await connect({ servers: process.env.NATS_URL });
const retry = {
  backoffMs: (process.env.BACKOFF_MS ?? "200").split(",").map(Number),
  maxDeliver: Number(process.env.MAX_DELIVER ?? 4),
  ackWaitMs: Number(process.env.ACK_WAIT_MS ?? 200),
};
await startWorker({
  nc,
  name: "doomed",
  log: pino({ level: "silent" }),
  retry,
  handler: async (job) => {
    process.stdout.write(`started ${job.id}\n`);
    await new Promise(() => {}); // never finishes: the test kills this process
  },
});
