// The demo `pnpm run pattern scheduled-jobs` runs: a job due in a moment, a debounced one (scheduled
// three times, run once), a cancelled one (never run), and, on nats-server 2.14+, a job every second
// and a cron job in a time zone, both cancelled after a few runs. Runners execute what comes due.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { delay } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, logSummary, runMain } from "@repo/kit";
import { type Run, startRunner } from "./runner.js";
import { cancel, schedule, scheduled } from "./scheduler.js";
import { STREAM, setup } from "./setup.js";

const usage = `usage: pnpm run pattern scheduled-jobs [--delay-ms N] [--recurring-runs N] [--json]
  --delay-ms N        how far ahead the one-off jobs are scheduled (default 2000)
  --recurring-runs N  the every-second and the cron job run at least N times each, then both are cancelled (default 3)`;

runMain("scheduled-jobs", async (signal, log) => {
  const options = demoOptions(usage, { "delay-ms": { default: 2_000, min: 1_000 }, "recurring-runs": 3 });
  if (!options) return;
  const delayMs = options["delay-ms"];
  const recurringRuns = options["recurring-runs"];

  const nc = await connectFromEnv("scheduled-jobs-demo");
  const [js, jsm] = [jetstream(nc), await jetstreamManager(nc)];
  const can = await setup(jsm, nc.info?.version);
  log.info(
    { server: nc.info?.version, recurring: can.recurring },
    can.recurring
      ? `stream ${STREAM}: schedules on schedule.<name>, their jobs on due.<name>`
      : `stream ${STREAM}: one-off schedules only; @every, cron and time zones need nats-server >= 2.14`,
  );

  const runs: Run[] = [];
  const runners = [];
  for (const name of ["runner-1", "runner-2"])
    runners.push(await startRunner({ nc, name, log, handler: async () => {}, onRun: (r) => void runs.push(r) }));
  const ran = (schedule: string) => runs.filter((r) => r.schedule === schedule);

  const run = Date.now().toString(36);
  const names = {
    once: `report-${run}`,
    debounced: `reminder-${run}`,
    cancelled: `cancelled-${run}`,
    every: `tick-${run}`,
    cron: `cron-${run}`,
  };
  const dueAt = Date.now() + delayMs;
  await schedule(js, names.once, { at: new Date(dueAt) }, { id: `${names.once}`, task: "send-report" });
  log.info({ schedule: names.once, in_ms: delayMs }, "scheduled once");
  for (const extra of [0, 250, 500])
    await schedule(js, names.debounced, { inMs: delayMs + extra }, { id: `${names.debounced}+${extra}`, task: "remind" });
  log.info({ schedule: names.debounced }, "scheduled three times under one name: only the newest stays");
  await schedule(js, names.cancelled, { inMs: delayMs }, { id: names.cancelled, task: "never" });
  log.info({ cancelled: await cancel(jsm, names.cancelled) }, "scheduled, then cancelled");
  if (can.recurring) {
    await schedule(js, names.every, { every: "1s" }, { id: names.every, task: "tick" });
    await schedule(js, names.cron, { cron: "* * * * * *", timezone: "Europe/Berlin" }, { id: names.cron, task: "cron" });
    log.info({ every: names.every, cron: names.cron }, "scheduled every second, and by cron in Europe/Berlin");
  }
  log.info({ schedules: await scheduled(jsm) }, "schedules the stream holds");

  // Wait (bounded) for the one-off jobs and the recurring runs, then cancel the recurring ones.
  const deadline = Date.now() + delayMs + 15_000;
  const recurringDone = () => !can.recurring || (ran(names.every).length >= recurringRuns && ran(names.cron).length >= recurringRuns);
  while (!signal.aborted && Date.now() < deadline && !(ran(names.once).length && ran(names.debounced).length && recurringDone()))
    await delay(100);
  if (can.recurring) for (const n of [names.every, names.cron]) await cancel(jsm, n);
  await delay(1_500); // anything wrongly still scheduled (the cancelled, a second debounced) would show up now
  await Promise.all(runners.map((r) => r.stop()));

  const once = ran(names.once);
  const early = once.filter((r) => r.at < dueAt).length;
  log.info({ ran: once.length, late_ms: once[0] ? once[0].at - dueAt : undefined }, "the one-off job");
  log.info({ runs: ran(names.debounced).map((r) => r.job.id) }, "the debounced job: the newest schedule only");
  const summary = {
    once: once.length,
    early,
    debounced_runs: ran(names.debounced).length,
    cancelled_runs: ran(names.cancelled).length,
    every_runs: ran(names.every).length,
    cron_runs: ran(names.cron).length,
    lost: (once.length ? 0 : 1) + (ran(names.debounced).length ? 0 : 1),
  };
  logSummary(
    log,
    summary,
    `summary: once=${summary.once} early=${early} debounced_runs=${summary.debounced_runs} cancelled_runs=${summary.cancelled_runs} every_runs=${summary.every_runs} cron_runs=${summary.cron_runs} (at least ${recurringRuns} each: one may run again while the other catches up) lost=${summary.lost}`,
  );
  await nc.close();
  if (signal.aborted) return;
  const recurringOk = !can.recurring || (summary.every_runs >= recurringRuns && summary.cron_runs >= recurringRuns);
  if (summary.once !== 1 || early || summary.debounced_runs !== 1 || summary.cancelled_runs || !recurringOk) process.exitCode = 1;
});
