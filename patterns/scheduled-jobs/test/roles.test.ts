// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type Run, startRunner } from "../src/runner.js";
import { cancel, schedule, scheduled } from "../src/scheduler.js";
import { CONSUMER, STREAM, setup, support } from "../src/setup.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();

describe("scheduled-jobs roles (nats/roles.conf)", () => {
  it("admin sets up, the scheduler schedules and cancels, the runner runs what is due", async (ctx) => {
    const admin = await roles.as("admin");
    if (!support(admin.info?.version).at) ctx.skip(true, "message schedules need nats-server 2.12 (e2e asserts the refusal)");
    await setup(await jetstreamManager(admin), admin.info?.version);
    const scheduler = await roles.as("scheduled-jobs-scheduler");
    const sm = await roles.manager("scheduled-jobs-scheduler");
    await schedule(jetstream(scheduler), "soon", { inMs: 1_000 }, { id: "soon", task: "report" });
    await schedule(jetstream(scheduler), "never", { inMs: 1_000 }, { id: "never", task: "report" });
    expect(await scheduled(sm)).toEqual(["never", "soon"]);
    expect(await cancel(sm, "never")).toBe(true);
    const runs: Run[] = [];
    const runner = await startRunner({
      nc: await roles.as("scheduled-jobs-runner"),
      name: "r",
      log,
      handler: async () => {},
      onRun: (r) => void runs.push(r),
    });
    await waitFor("the due job ran", () => runs.length === 1, { timeoutMs: 10_000 });
    await runner.stop();
    expect(runs.map((r) => r.job.id)).toEqual(["soon"]);
  });

  it("refuses the scheduler running jobs or deleting the stream; the runner scheduling, purging or deleting", async () => {
    expect(await refusal(jetstream(await roles.as("scheduled-jobs-scheduler")).consumers.get(STREAM, CONSUMER))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${STREAM}.${CONSUMER}`),
    );
    expect(await refusal((await roles.manager("scheduled-jobs-scheduler")).streams.delete(STREAM))).toMatch(
      notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`),
    );
    const runner = await roles.as("scheduled-jobs-runner");
    expect(await refusal(schedule(jetstream(runner), "forged", { inMs: 1_000 }, { id: "x", task: "x" }))).toMatch(
      notPermitted("schedule.forged"),
    );
    const rm = await roles.manager("scheduled-jobs-runner");
    expect(await refusal(cancel(rm, "soon"))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(rm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });
});
