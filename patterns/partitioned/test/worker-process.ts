// A worker in its own process, for the SIGKILL and SIGSTOP tests: one JSON line per event handled
// ({"key", "seq", "result"}), and "lease lost" when it finds, on waking, that it lost a partition.
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { startWorker } from "../src/worker.js";

const nc = await connect({ servers: process.env.NATS_URL, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
const log = pino({ level: "warn" }, process.stderr);
const workMs = Number(process.env.WORK_MS ?? 20);
await startWorker({
  nc,
  name: process.env.WORKER_NAME ?? "child",
  partitions: Number(process.env.PARTITIONS),
  timings: { leaseMs: Number(process.env.LEASE_MS), ackWaitMs: Number(process.env.ACK_WAIT_MS) },
  log,
  work: () => new Promise((r) => setTimeout(r, workMs)),
  onHandled: (h) => process.stdout.write(`${JSON.stringify({ key: h.event.key, seq: h.event.seq, result: h.result })}\n`),
});
process.stdout.write("started\n");
