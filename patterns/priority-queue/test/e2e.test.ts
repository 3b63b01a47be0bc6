import { jetstream } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { publishTasks, type Task, tasksAt } from "../src/producer.js";
import { overflow, tiers } from "../src/scenarios.js";
import { consumerFor, GROUP, LEVELS, nativeSupport, OVERFLOW_STREAM, STREAM, setup, TIERED_STREAM } from "../src/setup.js";
import { type Done, outOfPriority, startTierWorker, startWorker, takenOrder } from "../src/worker.js";

const e2e = serverForTests();
let version: string;

beforeAll(async () => {
  version = e2e.nc.info!.version;
});

beforeEach(async () => {
  for (const s of [STREAM, TIERED_STREAM, OVERFLOW_STREAM]) await e2e.jsm.streams.delete(s).catch(() => {});
});

/** A worker on a connection of its own, as a separate process would have; its tasks go to `done`. */
const ownWorker = async (name: string, handler: (t: Task) => Promise<void>, done: Done[]) =>
  e2e.stopAfter(await startWorker({ nc: await e2e.connect(), name, handler, log: e2e.log, onDone: (d) => void done.push(d) }));
const backlog = (n: number): Task[] => [...tasksAt("low", n), ...tasksAt("normal", n), ...tasksAt("high", n)];
const work = async () => void (await sleep(1));
const stored = async (stream: string) => (await e2e.jsm.streams.info(stream)).state.messages;

describe(`priority-queue on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("serves a full backlog strictly high, then normal, then low, with one worker", async () => {
    await setup(e2e.jsm, version);
    await publishTasks(e2e.nc, backlog(30)); // published low first
    const done: Done[] = [];
    e2e.stopAfter(await startWorker({ nc: e2e.nc, name: "w", handler: work, log: e2e.log, onDone: (d) => void done.push(d) }));
    await waitFor("90 tasks", () => done.length === 90);
    expect(done.map((d) => d.task.level)).toEqual([...Array(30).fill("high"), ...Array(30).fill("normal"), ...Array(30).fill("low")]);
    expect(new Set(done.map((d) => d.task.id)).size).toBe(90);
    await waitFor("the stream empty: every ack applied", async () => (await stored(STREAM)) === 0);
  });

  it("with three competing workers, never takes a lower task while a higher one is waiting", async () => {
    await setup(e2e.jsm, version);
    await publishTasks(e2e.nc, backlog(40));
    const done: Done[] = [];
    for (const name of ["a", "b", "c"]) await ownWorker(name, work, done);
    await waitFor("120 tasks", () => done.length === 120);
    expect(outOfPriority(takenOrder(done))).toBe(0);
    expect(new Set(done.map((d) => d.worker)).size).toBeGreaterThan(1);
    expect(new Set(done.map((d) => d.task.id)).size).toBe(120);
  });

  it("keeps every task in a worker's hand alive past ack_wait: slow tasks run once, not again on another worker", async () => {
    await setup(e2e.jsm, version);
    for (const level of LEVELS) await e2e.jsm.consumers.update(STREAM, consumerFor(level), { ack_wait: nanos(1_000) });
    const runs = new Map<string, number>();
    const slow = async (t: Task) => {
      runs.set(t.id, (runs.get(t.id) ?? 0) + 1);
      await sleep(150);
    };
    const done: Done[] = [];
    for (const name of ["holder", "other"]) await ownWorker(name, slow, done);
    await publishTasks(e2e.nc, tasksAt("normal", 12)); // 1.8 s of work; one pull can take all 12
    await waitFor("12 tasks done", () => new Set(done.map((d) => d.task.id)).size === 12, { timeoutMs: 20_000 });
    await sleep(1_500); // a task handed out again after its ack_wait would run now
    expect([...runs.values()].filter((n) => n > 1)).toEqual([]);
    expect(done.length).toBe(12);
  });

  it("stops quietly when its connection closes with tasks in hand: no error escapes, and another worker runs them", async () => {
    await setup(e2e.jsm, version);
    for (const level of LEVELS) await e2e.jsm.consumers.update(STREAM, consumerFor(level), { ack_wait: nanos(1_000) });
    const escaped: unknown[] = [];
    const onEscape = (err: unknown) => void escaped.push(err);
    process.on("uncaughtException", onEscape);
    try {
      const dying = await e2e.connect();
      const done: Done[] = [];
      let started = 0;
      const slow = async () => {
        started++;
        await sleep(100);
      };
      e2e.stopAfter(await startWorker({ nc: dying, name: "dying", handler: slow, log: e2e.log, onDone: (d) => void done.push(d) }));
      await publishTasks(e2e.nc, tasksAt("normal", 12)); // one pull takes them all
      await waitFor("the dying worker is under way", () => started === 2);
      await dying.close();
      await sleep(800); // its heartbeat ticks (every ack_wait / 3) with the hand it holds
      await ownWorker("other", work, done);
      await waitFor("12 tasks done", () => new Set(done.map((d) => d.task.id)).size === 12, { timeoutMs: 20_000 });
      expect(escaped.map(String)).toEqual([]);
    } finally {
      process.off("uncaughtException", onEscape);
    }
  });

  it("terminates a malformed task instead of retrying it, and serves the valid ones around it exactly once", async () => {
    await setup(e2e.jsm, version);
    const js = jetstream(e2e.nc);
    await js.publish("tasks.high", "not json");
    await js.publish("tasks.high", JSON.stringify({ id: "no-level" }));
    await publishTasks(e2e.nc, [...tasksAt("high", 3), ...tasksAt("low", 3)]);
    const done: Done[] = [];
    e2e.stopAfter(await startWorker({ nc: e2e.nc, name: "w", handler: work, log: e2e.log, onDone: (d) => void done.push(d) }));
    await waitFor("the 6 valid tasks", () => done.length === 6);
    await waitFor("the stream empty: the malformed ones are gone too", async () => (await stored(STREAM)) === 0);
    await sleep(300); // a redelivered malformed task or a second delivery would show up now
    expect(done.map((d) => d.task.id).sort()).toEqual(["high-0", "high-1", "high-2", "low-0", "low-1", "low-2"]);
    for (const level of LEVELS) expect((await e2e.jsm.consumers.info(STREAM, `tasks-${level}`)).num_ack_pending).toBe(0);
  });

  it("takes a high task published mid-backlog next, ahead of the waiting lower ones", async () => {
    await setup(e2e.jsm, version);
    await publishTasks(e2e.nc, tasksAt("low", 50));
    const done: Done[] = [];
    e2e.stopAfter(
      await startWorker({
        nc: e2e.nc,
        name: "w",
        handler: async () => void (await sleep(10)),
        log: e2e.log,
        onDone: (d) => void done.push(d),
      }),
    );
    await waitFor("some low tasks done", () => done.length >= 5);
    await publishTasks(e2e.nc, [{ id: "urgent", level: "high" }]);
    const doneAtPublish = done.length;
    await waitFor("the urgent task done", () => done.some((d) => d.task.id === "urgent"));
    // At most the task in hand when it arrived (plus one finishing as we looked) precedes it.
    expect(done.findIndex((d) => d.task.id === "urgent")).toBeLessThanOrEqual(doneAtPublish + 1);
    await waitFor("all done", () => done.length === 51);
  });

  it("with weights 6:3:1 serves lower levels a share of a full backlog instead of starving them", async () => {
    await setup(e2e.jsm, version);
    await publishTasks(e2e.nc, backlog(30));
    const done: Done[] = [];
    e2e.stopAfter(
      await startWorker({
        nc: e2e.nc,
        name: "w",
        handler: work,
        log: e2e.log,
        weights: { high: 6, normal: 3, low: 1 },
        onDone: (d) => void done.push(d),
      }),
    );
    await waitFor("90 tasks", () => done.length === 90);
    const levels = done.map((d) => d.task.level);
    for (let round = 0; round < 5; round++) {
      const ten = levels.slice(round * 10, round * 10 + 10);
      expect(
        LEVELS.map((l) => ten.filter((x) => x === l).length),
        `round ${round}`,
      ).toEqual([6, 3, 1]);
    }
    expect(levels.filter((l) => l === "low").length).toBe(30);
  });

  const native = nativeSupport(process.env.NATS_SERVER_VERSION ?? "99");
  it(
    native.overflow
      ? "reports native priority groups as available on this server"
      : "reports native priority groups as unavailable on this server and uses subjects per level",
    async () => {
      const got = await setup(e2e.jsm, version);
      expect(got).toEqual(nativeSupport(version));
      const names = await e2e.jsm.streams.names().next();
      expect(names.includes(TIERED_STREAM)).toBe(got.prioritized);
      expect(names.includes(OVERFLOW_STREAM)).toBe(got.overflow);
      expect(names).toContain(STREAM);
    },
  );

  it.runIf(native.prioritized)("a tier worker keeps every task in hand alive past ack_wait: slow tasks run once", async () => {
    await setup(e2e.jsm, version);
    await e2e.jsm.consumers.update(TIERED_STREAM, GROUP, { ack_wait: nanos(1_000) });
    const runs = new Map<string, number>();
    const slow = async (t: Task) => {
      runs.set(t.id, (runs.get(t.id) ?? 0) + 1);
      await sleep(150);
    };
    const done: Done[] = [];
    e2e.stopAfter(
      await startTierWorker({
        nc: e2e.nc,
        stream: TIERED_STREAM,
        name: "holder",
        pull: { priority: 0 },
        handler: slow,
        log: e2e.log,
        onDone: (d) => void done.push(d),
      }),
    );
    await sleep(300); // its pull is waiting at the server
    await publishTasks(e2e.nc, tasksAt("normal", 12), { subject: () => "tiered.tasks.render", stream: TIERED_STREAM }); // 1.8 s of work
    await waitFor("12 tasks done", () => new Set(done.map((d) => d.task.id)).size === 12, { timeoutMs: 20_000 });
    await sleep(1_500); // a task handed out again after its ack_wait would run now
    expect([...runs.values()].filter((n) => n > 1)).toEqual([]);
  });

  it.runIf(native.prioritized)(
    "prioritized group (2.12+): the preferred tier gets every task while it pulls; the fallback tier when it stops",
    async () => {
      const got = await setup(e2e.jsm, version);
      expect(got.prioritized).toBe(true);
      const { whileBoth, afterStop } = await tiers(e2e.nc, e2e.log, "", 100, 40);
      expect(whileBoth.filter((d) => d.worker === "preferred").length).toBe(100);
      expect(afterStop.length).toBe(40);
      expect(afterStop.every((d) => d.worker === "fallback")).toBe(true);
      expect(new Set([...whileBoth, ...afterStop].map((d) => d.task.id)).size).toBe(140); // each task once
      // Acks are not confirmed: the last one may still be on its way when its task is counted.
      await waitFor("the stream empty: every ack applied", async () => (await stored(TIERED_STREAM)) === 0);
    },
  );

  it.runIf(native.overflow)(
    "overflow group (2.11+): an overflow worker is served only while the backlog is at or above its min_pending",
    async () => {
      await setup(e2e.jsm, version);
      const { ofTen, ofTwentyFive, done } = await overflow(e2e.nc, e2e.log, "");
      expect(ofTen).toBe(0); // a backlog of 10 is left alone
      // Served while pending >= 20: at 25, 24, 23, 22, 21, 20 — six tasks, then it stops.
      expect(ofTwentyFive).toBe(6);
      expect(done.length).toBe(25);
      expect(new Set(done.map((d) => d.task.id)).size).toBe(25); // each task once
      await waitFor("the stream empty: every ack applied", async () => (await stored(OVERFLOW_STREAM)) === 0);
    },
  );
});
