import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { beforeEach, describe, expect, it } from "vitest";
import { eventsFor, type OrderEvent, publishInOrder } from "../src/producer.js";
import { consumerFor, LEASES, STATE, STREAM, setup, supported, type Timings } from "../src/setup.js";
import { allStates } from "../src/state.js";
import { type Handled, startWorker, type Worker } from "../src/worker.js";

const e2e = serverForTests({ reconnect: true });
const PARTITIONS = 6;
// Short leases and acks so that takeovers happen within a test; work of 5-20 ms an event.
const timings: Timings = { leaseMs: 1_500, ackWaitMs: 3_000 };
const can = () => supported(e2e.version);

beforeEach(async () => {
  if (!can()) return;
  for (const s of [STREAM, `KV_${LEASES}`, `KV_${STATE}`]) await e2e.jsm.streams.delete(s).catch(() => {});
  await setup(e2e.jsm, e2e.nc, PARTITIONS, timings);
});

/** Handlers running now, per partition, over every worker of this process; the most seen at once. */
const running = new Map<number, number>();
let mostAtOnce = 0;

/** Workers in this process, each on its own connection; every event they handle goes to `handled`. */
async function workers(names: string[], handled: Handled[], workMs = 5): Promise<Worker[]> {
  const started: Worker[] = [];
  for (const name of names) {
    const nc = await e2e.connect(name);
    const w = await startWorker({
      nc,
      name,
      partitions: PARTITIONS,
      timings,
      log: e2e.log,
      work: async (_e, p) => {
        running.set(p, (running.get(p) ?? 0) + 1);
        mostAtOnce = Math.max(mostAtOnce, running.get(p)!);
        await sleep(workMs);
        running.set(p, running.get(p)! - 1);
      },
      onHandled: (h) => void handled.push(h),
    });
    started.push(e2e.stopAfter(w));
  }
  return started;
}

/** A worker in its own process; its handled events (parsed) and whether it said its lease was lost. */
function child(name: string) {
  const proc: ChildProcess = spawn(process.execPath, ["--import", "tsx", "test/worker-process.ts"], {
    env: {
      ...process.env,
      NATS_URL: e2e.server.url,
      WORKER_NAME: name,
      PARTITIONS: String(PARTITIONS),
      LEASE_MS: String(timings.leaseMs),
      ACK_WAIT_MS: String(timings.ackWaitMs),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const handled: { key: string; seq: number; result: string }[] = [];
  let started = false;
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    if (line === "started") started = true;
    else handled.push(JSON.parse(line));
  });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  return { proc, handled, started: () => started, stderr: () => stderr, exited };
}

/** What each partition's consumer holds: [partition, pending, ack pending, pulls waiting, redelivered]. */
const consumers = () =>
  Promise.all(
    Array.from({ length: PARTITIONS }, async (_, p) => {
      const ci = await e2e.jsm.consumers.info(STREAM, consumerFor(p));
      return [p, ci.num_pending, ci.num_ack_pending, ci.num_waiting, ci.num_redelivered];
    }),
  );

/** Waits until every key's state holds all its events (none lost); a timeout says which lag and what the consumers hold. */
async function allApplied(byKey: OrderEvent[][], more: () => unknown = () => ({})) {
  const kv = await new Kvm(e2e.nc).open(STATE);
  let lagging: string[] = [];
  await waitFor(
    "every key's events applied",
    async () => {
      const states = await allStates(kv);
      lagging = byKey
        .filter((ev) => (states.get(ev[0]!.key)?.seq ?? 0) < ev.length)
        .map((ev) => `${ev[0]!.key}@${states.get(ev[0]!.key)?.seq ?? 0}`);
      return lagging.length === 0;
    },
    {
      timeoutMs: 60_000,
      everyMs: 250,
      detail: async () => ({ lagging: lagging.slice(0, 8), consumers: await consumers(), ...(more() as object) }),
    },
  );
}

/**
 * The guarantee, from what each worker reported applied, in the order it reported them (`reports`:
 * one list per process; a process's reports are in the order it applied them): each key's events
 * ascending in every report, none applied twice; with `all`, each key's events all there. A worker
 * SIGKILLed between a state change and its report leaves that event unreported: not `all`.
 */
function checkApplied(byKey: OrderEvent[][], reports: { key: string; seq: number }[][], all = true) {
  const seen = reports.flat().map((a) => `${a.key}-${a.seq}`);
  expect(seen.length - new Set(seen).size, "events applied twice").toBe(0);
  for (const report of reports) {
    const last = new Map<string, number>();
    for (const a of report) {
      expect(a.seq, `${a.key} applied after seq ${last.get(a.key)}`).toBeGreaterThan(last.get(a.key) ?? 0);
      last.set(a.key, a.seq);
    }
  }
  if (!all) return;
  const perKey = new Map<string, number[]>();
  for (const a of reports.flat()) perKey.set(a.key, [...(perKey.get(a.key) ?? []), a.seq]);
  for (const events of byKey)
    expect(
      [...(perKey.get(events[0]!.key) ?? [])].sort((x, y) => x - y),
      events[0]!.key,
    ).toEqual(events.map((e) => e.seq));
}

const appliedOf = (hs: { key: string; seq: number; result: string }[]) => hs.filter((h) => h.result === "applied");
const appliedIn = (hs: Handled[]) => hs.filter((h) => h.result === "applied").map((h) => h.event);

describe(`partitioned on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it.runIf(!supported(process.env.NATS_SERVER_VERSION ?? "99"))(
    "refuses in one line a server without stream subject transforms",
    async () => {
      await expect(setup(e2e.jsm, e2e.nc, PARTITIONS, timings)).rejects.toThrow(
        `partitioned needs nats-server >= 2.10 (stream subject transforms); this server is ${e2e.version}`,
      );
    },
  );

  describe.runIf(supported(process.env.NATS_SERVER_VERSION ?? "99"))("on a server with subject transforms", () => {
    it("applies every key's events in order and once, three workers on six partitions side by side: none lost", async () => {
      const handled: Handled[] = [];
      await workers(["a", "b", "c"], handled);
      const byKey = eventsFor(30, 20, "k");
      const published = await publishInOrder(e2e.nc, byKey);
      expect(published).toMatchObject({ stored: 600, failed: [] });
      await allApplied(byKey);
      checkApplied(byKey, [appliedIn(handled)]);
      expect(mostAtOnce).toBe(1); // never two handlers at once in one partition
      // Every key's events went to one partition, and so were handled by one worker at a time.
      const partitionsOf = new Map<string, Set<number>>();
      for (const h of handled) partitionsOf.set(h.event.key, (partitionsOf.get(h.event.key) ?? new Set()).add(h.partition));
      expect([...partitionsOf.values()].every((s) => s.size === 1)).toBe(true);
      expect(new Set(handled.map((h) => h.worker)).size).toBe(3); // the partitions were shared
    });

    it("stores a key's events in one partition: the server's partition(N, key) of order.<key>", async () => {
      await publishInOrder(e2e.nc, eventsFor(12, 3, "p"));
      for (let p = 0; p < PARTITIONS; p++) {
        const ci = await e2e.jsm.consumers.info(STREAM, consumerFor(p));
        expect(ci.config.filter_subject).toBe(`order.${p}.*`);
      }
      const subjects = new Map<string, Set<string>>();
      for (let seq = 1; seq <= 36; seq++) {
        const m = await e2e.jsm.streams.getMessage(STREAM, { seq });
        const [, partition, key] = m!.subject.split(".");
        subjects.set(key!, (subjects.get(key!) ?? new Set()).add(partition!));
      }
      expect(subjects.size).toBe(12);
      expect([...subjects.values()].every((s) => s.size === 1)).toBe(true);
    });

    it("ends an event that came before its key's earlier one, never applying it, and the partition goes on", async () => {
      const handled: Handled[] = [];
      await workers(["a"], handled);
      const js = jetstream(e2e.nc);
      // seq 2 of "late" without its seq 1: a producer that did not wait for each of a key's events.
      const held = await js.publish("order.late", JSON.stringify({ key: "late", seq: 2, type: "t", amount: 2 }), { msgID: "late-2" });
      const partition = Number((await e2e.jsm.streams.getMessage(STREAM, { seq: held.seq }))!.subject.split(".")[1]);
      // Then every other key's events, in every partition, its own among them.
      const others = eventsFor(24, 3, "other");
      await publishInOrder(e2e.nc, others);
      await allApplied(others);
      expect(handled.filter((h) => h.event.key === "late").map((h) => h.result)).toEqual(["gap"]);
      expect((await allStates(await new Kvm(e2e.nc).open(STATE))).has("late")).toBe(false); // never applied
      expect(handled.some((h) => h.partition === partition && h.event.key !== "late")).toBe(true); // its partition went on
      expect((await e2e.jsm.consumers.info(STREAM, consumerFor(partition))).num_ack_pending).toBe(0); // ended, not held
    });

    it("moves a stopped worker's partitions to the others and spreads them again when one joins; never two handlers in one partition", async () => {
      const handled: Handled[] = [];
      const all = await workers(["a", "b", "c"], handled, 10);
      mostAtOnce = 0;
      const byKey = eventsFor(30, 20, "m");
      const publishing = publishInOrder(e2e.nc, byKey);
      await waitFor("a quarter applied", () => handled.filter((h) => h.result === "applied").length >= 150, { timeoutMs: 30_000 });
      await all[0]!.stop();
      all.shift();
      await waitFor("the two hold all six", () => all.reduce((n, w) => n + w.held().length, 0) === PARTITIONS);
      all.push(...(await workers(["d"], handled, 10)));
      await waitFor("spread again: two each", () => all.every((w) => w.held().length === 2), { timeoutMs: 15_000 });
      expect((await publishing).stored).toBe(600);
      await allApplied(byKey);
      checkApplied(byKey, [appliedIn(handled)]);
      expect(mostAtOnce).toBe(1); // through a stop and a join: never two handlers at once in one partition
    });

    it("takes over the partitions of a worker killed with SIGKILL mid-event: its event comes back, in order, none lost", async () => {
      const doomed = child("doomed");
      const handled: Handled[] = [];
      try {
        await waitFor("the child started", () => doomed.started(), { timeoutMs: 20_000 });
        await waitFor("it holds all six", async () => (await e2e.jsm.streams.info(`KV_${LEASES}`)).state.messages >= PARTITIONS + 1);
        const byKey = eventsFor(20, 20, "s");
        const publishing = publishInOrder(e2e.nc, byKey);
        await waitFor("the child applied some", () => appliedOf(doomed.handled).length >= 50, { timeoutMs: 30_000 });
        doomed.proc.kill("SIGKILL");
        await doomed.exited;
        await workers(["heir"], handled);
        expect((await publishing).stored).toBe(400);
        await allApplied(byKey, () => ({ child: doomed.stderr().slice(-2_000) }));
        // The killed one may have changed a state and died before saying so: its report can lack that event.
        checkApplied(byKey, [appliedOf(doomed.handled), appliedIn(handled)], false);
      } finally {
        doomed.proc.kill("SIGKILL");
      }
    });

    it("gives up, on waking, the partitions of a worker paused past its lease and ack_wait (SIGSTOP, SIGCONT): no event applied twice or out of order", async () => {
      const paused = child("paused");
      const handled: Handled[] = [];
      try {
        await waitFor("the child started", () => paused.started(), { timeoutMs: 20_000 });
        const [steady] = await workers(["steady"], handled);
        await waitFor("both hold three", () => steady!.held().length === 3, { timeoutMs: 10_000 });
        const byKey = eventsFor(20, 20, "z");
        const publishing = publishInOrder(e2e.nc, byKey);
        await waitFor("the child applied some", () => appliedOf(paused.handled).length >= 30, { timeoutMs: 30_000 });
        paused.proc.kill("SIGSTOP"); // a GC pause, a blocked event loop: it holds events in hand
        await sleep(timings.ackWaitMs + timings.leaseMs + 1_000); // its leases run out, its events' ack_wait too
        await waitFor("the steady worker holds all six", () => steady!.held().length === PARTITIONS, { timeoutMs: 10_000 });
        paused.proc.kill("SIGCONT");
        expect((await publishing).stored).toBe(400);
        await allApplied(byKey, () => ({ child: paused.stderr().slice(-2_000) }));
        await waitFor("the child said it lost its leases", () => /lease lost/.test(paused.stderr()), { timeoutMs: 10_000 });
        await sleep(1_000); // anything the woken worker still does shows up now
        // Completeness comes from the states (allApplied): the woken child may have changed one just
        // before its pause and seen the write time out after it, leaving that event unreported.
        checkApplied(byKey, [appliedOf(paused.handled), appliedIn(handled)], false);
        // It was paused holding events: the steady worker took them over after their ack_wait.
        expect(handled.filter((h) => h.delivery > 1).length, paused.stderr().slice(-1_000)).toBeGreaterThan(0);
      } finally {
        paused.proc.kill("SIGKILL");
      }
    });
  });
});
