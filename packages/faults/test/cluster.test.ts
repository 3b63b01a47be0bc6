// A 3-node cluster with R3 streams: the stream leader is killed (SIGKILL) under load.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { publishPipelined } from "@patterns/dedup-publish/producer";
import { type Outcome, startApplier } from "@patterns/exactly-once/applier";
import { directoryBank } from "@patterns/exactly-once/effects";
import { charges, publishCharges } from "@patterns/exactly-once/producer";
import { LEDGER as CHARGE_LEDGER, COMMANDS, setup as setupCharges } from "@patterns/exactly-once/setup";
import { appendEvents, ledgerEvents } from "@patterns/ordered-replay/producer";
import { STREAM as LEDGER, setup as setupLedger } from "@patterns/ordered-replay/setup";
import { startDeadLetterMover } from "@patterns/work-queue/dead-letter";
import { CONSUMER, DLQ_STREAM, type RetryPolicy, STREAM, setup } from "@patterns/work-queue/setup";
import { type NatsCluster, sleep, startCluster, waitFor } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { firstAccepted, jobs, Ledger, replaySeqs, replicasCurrent, spawnWorker, streamLeader, type WorkerProcess } from "./helpers.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const retry: RetryPolicy = { backoffMs: [1_000, 1_000, 1_000], maxDeliver: 4 };
let cluster: NatsCluster;
let nc: NatsConnection;
let jsm: JetStreamManager;

// A fresh cluster for each test: a fault in one test must not shape the next.
beforeEach(async () => {
  process.env.NATS_REPLICAS = "3"; // the patterns' setup creates R3 streams
  cluster = await startCluster();
  nc = await connect({ servers: cluster.url.split(","), reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  jsm = await jetstreamManager(nc);
});

afterEach(async () => {
  delete process.env.NATS_REPLICAS;
  await nc?.close();
  await cluster?.stop();
});

/** What each running node says about the meta group and the streams, for a failure message. */
async function nodeViews() {
  return Promise.all(
    cluster.nodes
      .filter((n) => n.running())
      .map(async (n) => {
        const c = await connect({ servers: n.url, timeout: 2_000 }).catch(() => undefined);
        if (!c) return { node: n.name, connect: "failed" };
        const info = await jetstreamManager(c, { timeout: 2_000 })
          .then((m) => m.streams.info(LEDGER))
          .then(
            (i) => ({ leader: i.cluster?.leader, replicas: i.cluster?.replicas?.map((r) => `${r.name}:${r.current}`) }),
            (e: Error) => e.message,
          );
        await c.close();
        return {
          node: n.name,
          info,
          log: n
            .log()
            .split("\n")
            .filter((l) => /\[(WRN|ERR)\]|leader/i.test(l))
            .slice(-4),
        };
      }),
  );
}

const leaderOf = (stream: string) => streamLeader(jsm, stream);
const caughtUp = (stream: string) => replicasCurrent(jsm, stream);

describe(`3-node cluster, nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("work-queue: the stream leader is killed under publish + consume load; no acked job is lost, accounting holds, the node catches up", async () => {
    await setup(jsm, retry);
    const mover = await startDeadLetterMover(nc, log);
    const ledger = new Ledger();
    const workers: WorkerProcess[] = ["w1", "w2", "w3"].map((name) => spawnWorker(name, cluster.url, retry, ledger));
    await Promise.all(workers.map((w) => w.ready));

    const all = jobs("cj", 1_500);
    const poison = all.filter((j) => j.subject === "jobs.poison").length;
    // A steady stream of jobs: 15 batches of 100, 100ms apart, so the kill lands mid-publish.
    let batchesDone = 0;
    const publishing = (async () => {
      const results = [];
      for (let i = 0; i < all.length; i += 100) {
        results.push(
          ...(await publishPipelined(nc, all.slice(i, i + 100), { stream: STREAM, window: 32, timeoutMs: 1_000, attempts: 30 })),
        );
        batchesDone++;
        await sleep(100);
      }
      return results;
    })();
    await waitFor("300 processed", () => ledger.processed.size >= 300, { timeoutMs: 60_000 });
    const leader = cluster.node(await leaderOf(STREAM));
    await leader.kill();
    expect(batchesDone).toBeLessThan(15); // still publishing when the leader died
    const published = await publishing;
    expect(published.filter((r) => r.error)).toEqual([]); // every job acked, some after a retry

    const missing = () => all.map((j) => j.id).filter((id) => !ledger.processed.has(id) && !ledger.deadLettered.has(id));
    await waitFor("every job accounted for", () => ledger.accounted() >= all.length, {
      timeoutMs: 90_000,
      detail: async () => ({
        accounted: ledger.accounted(),
        missing: missing().slice(0, 5),
        jobs: (await jsm.streams.info(STREAM)).state,
        consumer: await jsm.consumers.info(STREAM, CONSUMER).then((c) => ({
          pending: c.num_pending,
          ack_pending: c.num_ack_pending,
          redelivered: c.num_redelivered,
          leader: c.cluster?.leader,
        })),
      }),
    });
    expect(await leaderOf(STREAM)).not.toBe(leader.name); // a new leader took over
    expect(ledger.accounted()).toBe(all.length); // processed + dead-lettered = published: acked-and-missing = 0
    expect(ledger.inBoth()).toEqual([]);
    expect(ledger.deadLettered.size).toBe(poison);
    await waitFor("the work stream drained", async () => (await jsm.streams.info(STREAM)).state.messages === 0);
    expect((await storedMessages(jsm, DLQ_STREAM)).length).toBe(poison);

    await leader.restart();
    await cluster.ready();
    await caughtUp(STREAM);
    await caughtUp(DLQ_STREAM);
    await Promise.all(workers.map((w) => w.stop()));
    await mover.stop();
  });

  it("exactly-once: the commands' stream leader is killed mid-run; every charge's effects applied exactly once", async () => {
    const states = await setupCharges(jsm, nc, { ackWaitMs: 2_000 });
    const bankDir = mkdtempSync(join(tmpdir(), "eo-cluster-bank-"));
    const bank = directoryBank(bankDir);
    const outcomes: Outcome[] = [];
    const appliers = [];
    for (const name of ["a", "b"]) {
      const anc = await connect({ servers: cluster.url.split(","), reconnectTimeWait: 100, maxReconnectAttempts: -1 });
      appliers.push({ anc, applier: await startApplier({ nc: anc, name, states, bank, log, onOutcome: (o) => void outcomes.push(o) }) });
    }
    const list = charges(600, "r3");
    await firstAccepted("a charge", () => publishCharges(nc, list.slice(0, 1)));
    await publishCharges(nc, list.slice(1));
    await waitFor("a quarter applied", () => outcomes.length >= 150, { timeoutMs: 60_000 });
    const leader = cluster.node(await leaderOf(COMMANDS));
    await leader.kill();
    const applied = () => new Set(outcomes.map((o) => o.charge.id)).size;
    await waitFor("every charge applied", () => applied() >= list.length, { timeoutMs: 90_000, detail: () => ({ applied: applied() }) });
    const { state } = await jsm.streams.info(CHARGE_LEDGER, { subjects_filter: "charges.ledger.>" });
    expect(Object.keys(state.subjects ?? {}).length).toBe(list.length); // every charge in the ledger
    expect(state.messages).toBe(list.length); // none twice
    expect(bank.charged().sort()).toEqual(list.map((c) => c.id).sort()); // charged once each
    for (const { anc, applier } of appliers) {
      await applier.stop();
      await anc.close();
    }
    rmSync(bankDir, { recursive: true, force: true });
    await leader.restart();
    await cluster.ready();
    await caughtUp(COMMANDS);
  });

  it("ordered-replay: gap-free and in order across a stream leader change", async () => {
    await setupLedger(jsm, nc);
    const events = ledgerEvents(3_000);
    await firstAccepted("an event", () => appendEvents(nc, events.slice(0, 1)));
    await appendEvents(nc, events.slice(1));
    const { seqs, done: replaying } = replaySeqs(nc, "cluster", log);
    // The replayer's own recovery (10 s for a consumer create, 3 s for a stall) must fit in this wait.
    await waitFor("a fifth replayed", () => seqs.length >= 600, { timeoutMs: 45_000, detail: () => ({ replayed: seqs.length }) });
    const leader = cluster.node(await leaderOf(LEDGER));
    await leader.kill();
    // The replay finishes with the old leader still down.
    await waitFor("the replay to finish", () => seqs.length >= 3_000, {
      timeoutMs: 60_000,
      detail: async () => ({ replayed: seqs.length, last: seqs.at(-1), killed: leader.name, nodes: await nodeViews() }),
    });
    await replaying;
    expect(seqs).toEqual(Array.from({ length: 3_000 }, (_, i) => i + 1));
    await leader.restart();
    await cluster.ready();
    await caughtUp(LEDGER);
  });
});
