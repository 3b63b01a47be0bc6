// The demo `pnpm run pattern priority-queue` runs: a backlog in all three levels served high first by
// competing workers, the same with weights, then (on servers that have them) native priority groups.

import { jetstreamManager } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, type Logger, logSummary, runMain } from "@repo/kit";
import { publishTasks, tasksAt } from "./producer.js";
import { LEVELS, OVERFLOW_STREAM, setup, TIERED_STREAM } from "./setup.js";
import { type Done, outOfPriority, type Stoppable, startTierWorker, startWorker, takenOrder } from "./worker.js";

const usage = `usage: pnpm run pattern priority-queue [--tasks N] [--workers N] [--json]
  --tasks N     tasks per level in the backlog (default 40)
  --workers N   competing workers (default 2)`;

const work = async () => void (await delay(2));

async function until(check: () => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await delay(20);
}

/** Native priority groups: preferred and fallback tiers (prioritized), and overflow workers. */
async function nativeGroups(nc: NatsConnection, log: Logger, run: string, native: { prioritized: boolean; overflow: boolean }) {
  const result: Record<string, number> = {};
  if (native.prioritized) {
    const done: Done[] = [];
    const onDone = (d: Done) => void done.push(d);
    const preferred = await startTierWorker({
      nc,
      stream: TIERED_STREAM,
      name: "preferred",
      pull: { priority: 0 },
      handler: work,
      log,
      onDone,
    });
    const fallback = await startTierWorker({
      nc,
      stream: TIERED_STREAM,
      name: "fallback",
      pull: { priority: 1 },
      handler: work,
      log,
      onDone,
    });
    await delay(200);
    const publish = (prefix: string, n: number) =>
      publishTasks(nc, tasksAt("normal", n, `${run}-${prefix}`), { subject: () => "tiered.tasks.render", stream: TIERED_STREAM });
    await publish("tier-a", 100);
    await until(() => done.length === 100);
    const count = (w: string) => done.filter((d) => d.worker === w).length;
    log.info(
      { preferred: count("preferred"), fallback: count("fallback") },
      "prioritized group: both tiers pulling, the preferred tier gets the tasks",
    );
    await preferred.stop();
    await publish("tier-b", 50);
    await until(() => done.length === 150);
    log.info({ preferred: count("preferred"), fallback: count("fallback") }, "preferred tier stopped: the fallback tier takes over");
    await fallback.stop();
    Object.assign(result, { preferred: count("preferred"), fallback: count("fallback") });
  }
  if (native.overflow) {
    const done: Done[] = [];
    const onDone = (d: Done) => void done.push(d);
    const publish = (prefix: string, n: number) =>
      publishTasks(nc, tasksAt("normal", n, `${run}-${prefix}`), { subject: () => "overflow.tasks.render", stream: OVERFLOW_STREAM });
    const spill = await startTierWorker({
      nc,
      stream: OVERFLOW_STREAM,
      name: "overflow",
      pull: { min_pending: 20 },
      handler: work,
      log,
      onDone,
    });
    await publish("ov-a", 10);
    await delay(500);
    log.info({ backlog: 10, overflow_got: done.length }, "overflow worker (min_pending 20): a small backlog is left alone");
    await publish("ov-b", 15);
    await until(() => done.length >= 5);
    await delay(300);
    log.info({ backlog: 25, overflow_got: done.length }, "backlog above 20: the overflow worker takes the excess");
    await spill.stop();
    const regular = await startTierWorker({
      nc,
      stream: OVERFLOW_STREAM,
      name: "regular",
      pull: { min_pending: 0 },
      handler: work,
      log,
      onDone,
    });
    await until(() => done.length === 25);
    await regular.stop();
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
