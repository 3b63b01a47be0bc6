// The runner service a starter deploys (`npm start`; the demo is `npm run demo`): creates or checks the
// stream and the runners' consumer, runs due jobs with handleJob until SIGTERM or SIGINT, then
// finishes the job in hand (within STOP_DEADLINE_MS) and exits 0. The kit's runService gives the
// connection, HEALTH_PORT's /healthz and the stop. Schedule jobs with `npm run schedule` (scheduler.ts).
// Replace handleJob with your code; make it idempotent (a job can run again after a crash).
import { jetstreamManager } from "@nats-io/jetstream";
import { isEntry, runService, stopWithin } from "@repo/kit";
import { startRunner } from "./runner.js";
import { type Job, scheduled } from "./scheduler.js";
import { CONSUMER, STREAM, setup } from "./setup.js";

export const handleJob = async (_job: Job): Promise<void> => {};

if (isEntry(import.meta.url)) {
  runService("scheduled-jobs-service", async (nc, log) => {
    const jsm = await jetstreamManager(nc);
    await setup(jsm, nc.info?.version);
    const runner = await startRunner({
      nc,
      name: process.env.WORKER_NAME ?? `runner-${process.pid}`,
      log,
      handler: handleJob,
      onRun: (r) => log.info({ id: r.job.id, schedule: r.schedule, delivery: r.delivery }, "ran"),
    });
    return {
      stop: (deadlineMs) => stopWithin(runner.stop(), deadlineMs, log),
      health: async () => {
        if (runner.stopped) throw new Error(runner.stopped); // the loop ended by itself: 503
        return { due: (await jsm.consumers.info(STREAM, CONSUMER)).num_pending, schedules: (await scheduled(jsm)).length };
      },
    };
  });
}
