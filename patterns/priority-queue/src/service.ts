// The priority worker service a starter deploys (`npm start`; the demo is `npm run demo`): creates or
// checks the stream and the level consumers, takes tasks highest level first with handleTask until
// SIGTERM or SIGINT, then finishes the task in hand (within STOP_DEADLINE_MS) and exits 0. The kit's
// runService gives the connection, HEALTH_PORT's /healthz and the stop. WORKER_NAME names it.
// Replace handleTask with your code; make it idempotent (a task can run again after a crash).
import { jetstreamManager } from "@nats-io/jetstream";
import { isEntry, runService, stopWithin } from "@repo/kit";
import type { Task } from "./producer.js";
import { consumerFor, LEVELS, STREAM, setup } from "./setup.js";
import { startWorker } from "./worker.js";

export const handleTask = async (_task: Task): Promise<void> => {};

if (isEntry(import.meta.url)) {
  runService("priority-queue-service", async (nc, log) => {
    const jsm = await jetstreamManager(nc);
    await setup(jsm, nc.info?.version);
    const name = process.env.WORKER_NAME ?? `worker-${process.pid}`;
    const worker = await startWorker({
      nc,
      name,
      log,
      handler: handleTask,
      onDone: (d) => log.info({ id: d.task.id, level: d.task.level }, "done"),
    });
    return {
      stop: (deadlineMs) => stopWithin(worker.stop(), deadlineMs, log),
      health: async () => {
        const waiting: Record<string, number> = {};
        for (const level of LEVELS) waiting[level] = (await jsm.consumers.info(STREAM, consumerFor(level))).num_pending;
        return { waiting };
      },
    };
  });
}
