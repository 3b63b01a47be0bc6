import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import type { Serving } from "@repo/kit";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Run, startRunner } from "../src/runner.js";
import { cancel, schedule, scheduled } from "../src/scheduler.js";
import { STREAM, setup, support } from "../src/setup.js";

const e2e = serverForTests({ reconnect: true });
let js: JetStreamClient;
let version: string | undefined;
const runs: Run[] = [];
let runner: Serving | undefined;

beforeAll(async () => {
  [js, version] = [jetstream(e2e.nc), e2e.nc.info?.version];
});
beforeEach(async () => {
  await e2e.jsm.streams.delete(STREAM).catch(() => {});
  runs.splice(0);
});
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

const startRunning = async () => {
  await setup(e2e.jsm, version);
  runner = await startRunner({ nc: e2e.nc, name: "r", log: e2e.log, handler: async () => {}, onRun: (r) => void runs.push(r) });
};
const ran = (name: string) => runs.filter((r) => r.schedule === name);
const can = () => support(version);

describe(`scheduled-jobs on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("refuses, in one line, a server without message schedules (< 2.12), creating nothing; sets up on one with them", async () => {
    if (can().at) {
      expect(await setup(e2e.jsm, version)).toEqual(can());
      expect((await e2e.jsm.streams.info(STREAM)).config.allow_msg_schedules).toBe(true);
    } else {
      await expect(setup(e2e.jsm, version)).rejects.toThrow(
        new RegExp(
          `^scheduled jobs need nats-server >= 2\\.12 \\(message schedules; @every, cron and time zones: 2\\.14\\); this server is ${version}$`,
        ),
      );
      await expect(e2e.jsm.streams.info(STREAM)).rejects.toThrow(/not found/);
    }
  });

  it("runs a job due at T not before T, once, within a second of T", async (ctx) => {
    if (!can().at) ctx.skip(true, "message schedules need nats-server 2.12 (the first test asserts the refusal)");
    await startRunning();
    const at = Date.now() + 1_500;
    await schedule(js, "once", { at: new Date(at) }, { id: "once-1", task: "report" });
    await waitFor("the job ran", () => ran("once").length === 1, { timeoutMs: 10_000 });
    await sleep(1_000); // a second run would show up now
    expect(ran("once").map((r) => r.job.id)).toEqual(["once-1"]);
    expect(ran("once")[0]!.at).toBeGreaterThanOrEqual(at);
    expect(ran("once")[0]!.at - at).toBeLessThan(1_000);
    expect(await scheduled(e2e.jsm)).toEqual([]); // a done @at schedule is removed by the server
  });

  it("runs a debounced job once, with the newest payload; never runs a cancelled one", async (ctx) => {
    if (!can().at) ctx.skip(true, "message schedules need nats-server 2.12 (the first test asserts the refusal)");
    await startRunning();
    for (const n of [1, 2, 3]) await schedule(js, "debounced", { inMs: 1_000 + n * 100 }, { id: `debounced-${n}`, task: "remind" });
    await schedule(js, "cancelled", { inMs: 1_000 }, { id: "cancelled", task: "never" });
    expect(await scheduled(e2e.jsm)).toEqual(["cancelled", "debounced"]);
    expect(await cancel(e2e.jsm, "cancelled")).toBe(true);
    expect(await cancel(e2e.jsm, "cancelled")).toBe(false); // already gone
    await waitFor("the debounced job ran", () => ran("debounced").length > 0, { timeoutMs: 10_000 });
    await sleep(1_500);
    expect(ran("debounced").map((r) => r.job.id)).toEqual(["debounced-3"]);
    expect(ran("cancelled")).toEqual([]);
  });

  it("keeps a schedule across a server restart: the job runs once, on time", async (ctx) => {
    if (!can().at) ctx.skip(true, "message schedules need nats-server 2.12 (the first test asserts the refusal)");
    if (e2e.server.external) ctx.skip(true, "a server given by NATS_URL cannot be restarted from here");
    await startRunning();
    const at = Date.now() + 3_000;
    await schedule(js, "restart", { at: new Date(at) }, { id: "restart-1", task: "report" });
    await e2e.server.restart(); // same store dir: the schedule is stored
    await waitFor("the job ran after the restart", () => ran("restart").length === 1, { timeoutMs: 20_000 });
    await sleep(1_000);
    expect(ran("restart").map((r) => r.job.id)).toEqual(["restart-1"]);
    expect(ran("restart")[0]!.at).toBeGreaterThanOrEqual(at);
  });

  it("fires an every-second schedule about once a second, and not after it is cancelled", async (ctx) => {
    if (!can().recurring) ctx.skip(true, "@every needs nats-server 2.14");
    await startRunning();
    const start = Date.now();
    await schedule(js, "tick", { every: "1s" }, { id: "tick", task: "tick" });
    await waitFor("4 runs", () => ran("tick").length >= 4, { timeoutMs: 10_000 });
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(3_000); // at most one a second (the first may come at once)
    expect(elapsed).toBeLessThan(6_000);
    await cancel(e2e.jsm, "tick");
    const after = ran("tick").length;
    await sleep(2_500);
    expect(ran("tick").length - after).toBeLessThanOrEqual(1); // one may have been on its way
  });

  it("fires a cron schedule in a time zone, and refuses one with an unknown time zone", async (ctx) => {
    if (!can().recurring) ctx.skip(true, "cron and time zones need nats-server 2.14");
    await startRunning();
    await schedule(js, "cron", { cron: "* * * * * *", timezone: "America/Denver" }, { id: "cron", task: "cron" });
    await waitFor("3 cron runs", () => ran("cron").length >= 3, { timeoutMs: 10_000 });
    await cancel(e2e.jsm, "cron");
    await expect(schedule(js, "badtz", { cron: "0 0 5 * * *", timezone: "Mars/Olympus" }, { id: "x", task: "x" })).rejects.toThrow();
  });
});
