// The demo `pnpm run pattern priority-queue` runs: a backlog in all three levels served high first by
// competing workers, the same with weights, then (on servers that have them) native priority groups.

import { jetstreamManager } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, type Logger, logSummary, runMain, type Stoppable } from "@repo/kit";
import { publishTasks, tasksAt } from "./producer.js";
import { overflow, tiers } from "./scenarios.js";
import { LEVELS, setup } from "./setup.js";
import { type Done, outOfPriority, startWorker, takenOrder } from "./worker.js";

const usage = `usage: pnpm run pattern priority-queue [--tasks N] [--workers N] [--json]
  --tasks N     tasks per level in the backlog (default 40)
  --workers N   competing workers (default 2)`;

const work = async () => void (await delay(2));

async function until(check: () => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await delay(20);
}

/** Native priority groups (src/scenarios.ts, the tests' scenarios too): tiers, then overflow. */
async function nativeGroups(nc: NatsConnection, log: Logger, run: string, native: { prioritized: boolean; overflow: boolean }) {
  const result: Record<string, number> = {};
  if (native.prioritized) {
    log.info("prioritized group: a preferred and a fallback tier pull; 100 tasks, then the preferred tier stops and 50 more");
    const { whileBoth, afterStop } = await tiers(nc, log, `${run}-tier-`, 100, 50);
    const by = (done: Done[], w: string) => done.filter((d) => d.worker === w).length;
    log.info(
      { preferred: by(whileBoth, "preferred"), fallback: by(whileBoth, "fallback") },
      "prioritized group: both tiers pulling, the preferred tier gets the tasks",
    );
    log.info(
      { preferred: by(afterStop, "preferred"), fallback: by(afterStop, "fallback") },
      "preferred tier stopped: the fallback tier takes over",
    );
    const all = [...whileBoth, ...afterStop];
    Object.assign(result, { preferred: by(all, "preferred"), fallback: by(all, "fallback") });
  }
  if (native.overflow) {
    log.info("overflow group: a worker with min_pending 20, a backlog of 10, then 15 more, then a regular worker");
    const { ofTen, ofTwentyFive, done } = await overflow(nc, log, `${run}-ov-`);
    log.info({ backlog: 10, overflow_got: ofTen }, "overflow worker (min_pending 20): a small backlog is left alone");
    log.info(
      { backlog: 25, overflow_got: ofTwentyFive },
      "backlog above 20: the overflow worker takes the excess; a regular worker the rest",
    );
    Object.assign(result, { overflow: done.filter((d) => d.worker === "overflow").length });
  }
  return result;
}

runMain("priority-queue", async (_signal, log) => {
  const options = demoOptions(usage, { tasks: 40, workers: 2 });
  if (!options) return;
  const { tasks: perLevel, workers: workerCount } = options;

  const nc = await connectFromEnv("priority-demo");
  const version = nc.info?.version;
  const native = await setup(await jetstreamManager(nc), version);
  if (!native.overflow)
    log.warn(
      { server: version },
      `priority groups need nats-server >= 2.11 (prioritized >= 2.12); this server is ${version}: using subjects per level`,
    );
  else if (!native.prioritized)
    log.warn(
      { server: version },
      `the prioritized policy needs nats-server >= 2.12; this server is ${version}: overflow groups and subjects per level`,
    );

  // 1. Strict priority: the backlog is published low first, and still served high first.
  const run = Date.now().toString(36);
  const backlog = (prefix: string) => [
    ...tasksAt("low", perLevel, `${run}-${prefix}-low`),
    ...tasksAt("normal", perLevel, `${run}-${prefix}-normal`),
    ...tasksAt("high", perLevel, `${run}-${prefix}-high`),
  ];
  await publishTasks(nc, backlog("strict"));
  const done: Done[] = [];
  let workers: Stoppable[] = [];
  for (let i = 1; i <= workerCount; i++)
    workers.push(await startWorker({ nc, name: `worker-${i}`, handler: work, log, onDone: (d) => void done.push(d) }));
  await until(() => done.length === 3 * perLevel);
  const taken = takenOrder(done);
  const violations = outOfPriority(taken);
  log.info(
    { workers: workerCount, completed: done.length, first: taken.slice(0, 3), last: taken.slice(-3), violations },
    "strict: published low, normal, high; taken high, then normal, then low",
  );
  await Promise.all(workers.map((w) => w.stop()));

  // 2. Weighted: lower levels get a share while higher ones are busy (6:3:1 per 10 tasks).
  await publishTasks(nc, backlog("weighted"));
  const weighted: Done[] = [];
  workers = [
    await startWorker({
      nc,
      name: "weighted",
      handler: work,
      log,
      weights: { high: 6, normal: 3, low: 1 },
      onDone: (d) => void weighted.push(d),
    }),
  ];
  await until(() => weighted.length === 3 * perLevel);
  const firstTen = Object.fromEntries(LEVELS.map((l) => [l, weighted.slice(0, 10).filter((d) => d.task.level === l).length]));
  log.info(firstTen, "weighted 6:3:1: the first 10 tasks of a full backlog");
  await Promise.all(workers.map((w) => w.stop()));

  // 3. Native priority groups, where the server has them.
  const groups = await nativeGroups(nc, log, run, native);
  await nc.drain();

  const lost = 3 * perLevel - done.length + 3 * perLevel - weighted.length;
  const ordered = violations === 0;
  const nativeLabel = native.prioritized ? "prioritized+overflow" : native.overflow ? "overflow" : "unavailable (subjects per level)";
  logSummary(
    log,
    { completed: done.length + weighted.length, high_first: ordered, weighted_first_ten: firstTen, native: nativeLabel, ...groups, lost },
    `summary: completed=${done.length + weighted.length} high_first=${ordered} weighted_first_ten=${firstTen.high}/${firstTen.normal}/${firstTen.low} native=${nativeLabel} lost=${lost}`,
  );
  if (lost > 0 || !ordered) process.exitCode = 1;
});
