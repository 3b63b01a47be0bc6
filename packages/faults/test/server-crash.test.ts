// A single nats-server (file storage) killed with SIGKILL while a producer publishes with acks, and
// while workers process a backlog.

import { spawn } from "node:child_process";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { payment, publishPipelined } from "@patterns/dedup-publish/producer";
import { readStored, storedTwice } from "@patterns/dedup-publish/reader";
import { STREAM, setup } from "@patterns/dedup-publish/setup";
import { DLQ_STREAM as DLQ, STREAM as JOBS, type RetryPolicy, setup as setupJobs } from "@patterns/work-queue/setup";
import { repoRoot, sleep, waitFor } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import { describe, expect, it } from "vitest";
import { jobs, Ledger, serverPerTest, spawnWorker } from "./helpers.js";

const fresh = serverPerTest();
const workers = fresh.processes;

describe("server crash (SIGKILL) during acked publishing", () => {
  for (const sync of ["default", "always"] as const) {
    it(`keeps every acknowledged message and stores retried ones once (sync_interval: ${sync})`, async () => {
      const server = await fresh.start({ sync });
      const nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
      await setup(await jetstreamManager(nc));
      const msgs = Array.from({ length: 3_000 }, (_, i) => payment(`crash-${i}`, i));
      const publishing = publishPipelined(nc, msgs, { window: 64, timeoutMs: 500, attempts: 40 });
      const jsm = await jetstreamManager(nc);
      await waitFor("a third stored", async () => (await jsm.streams.info(STREAM)).state.messages >= 1_000, { everyMs: 5 });
      await server.kill(); // SIGKILL: no shutdown, no flush
      await sleep(300);
      await server.restart(); // same port, same store dir
      const results = await publishing;

      const acked = results.filter((r) => !r.error).map((r) => r.id);
      const stored = await readStored(nc);
      const storedIds = new Set(stored.map((s) => s.id));
      const ackedMissing = acked.filter((id) => !storedIds.has(id));
      expect(results.filter((r) => r.error)).toEqual([]); // every message was eventually acked
      expect(ackedMissing).toEqual([]); // acked-and-missing = 0
      expect(storedTwice(stored)).toEqual([]);
      expect(stored.length).toBe(msgs.length);
      expect(results.some((r) => r.attempts > 1)).toBe(true); // the crash really interrupted publishing
      await nc.close();
    });
  }
});

describe("server crash (SIGKILL) and restart while workers process a backlog", () => {
  it("loses no job: processed + dead-lettered = published, none in both, redeliveries counted", async () => {
    const server = await fresh.start();
    const nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
    const jsm = await jetstreamManager(nc);
    const retry: RetryPolicy = { backoffMs: [500, 500, 500], maxDeliver: 3 };
    await setupJobs(jsm, retry);
    const ledger = new Ledger();
    for (const name of ["w1", "w2"]) workers.push(spawnWorker(name, server.url, retry, ledger));
    await Promise.all(workers.map((w) => w.ready));
    const all = jobs("crash", 2_000);
    const poison = all.filter((j) => j.subject === "jobs.poison").length;
    expect((await publishPipelined(nc, all, { stream: JOBS })).filter((r) => r.error)).toEqual([]);

    await waitFor("a quarter processed", () => ledger.processed.size >= 500, { timeoutMs: 30_000, everyMs: 5 });
    await server.kill(); // SIGKILL: acks in flight die with it
    await sleep(500);
    await server.restart(); // same port, same store dir: the workers reconnect
    await waitFor("every job accounted for", () => ledger.accounted() >= all.length, { timeoutMs: 90_000 });

    expect(ledger.accounted()).toBe(all.length); // lost = 0
    expect(ledger.inBoth()).toEqual([]);
    expect(ledger.deadLettered.size).toBe(poison);
    await waitFor("the queue empty", async () => (await jsm.streams.info(JOBS)).state.messages === 0, { timeoutMs: 30_000 });
    expect((await storedMessages(jsm, DLQ)).length).toBe(poison); // each dead letter stored once
    // Repeats are what at-least-once allows after a crash: reported, not failed on.
    const repeats = [...ledger.processed.values()].reduce((a, b) => a + b, 0) - ledger.processed.size;
    console.log(`server crash mid-backlog: ${all.length} jobs, ${repeats} handled again after the restart`);
    await nc.close();
  });

  it("the work-queue demo against NATS_URL exits 0 with lost=0 and reports the redeliveries", async () => {
    const server = await fresh.start();
    const demo = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "patterns/work-queue/src/main.ts"), "--jobs", "3000"], {
      env: { ...process.env, NATS_URL: server.url, LOG_FORMAT: "json" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    demo.stdout.on("data", (d) => (stdout += d));
    demo.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => demo.once("exit", resolve));
    await waitFor("the demo processing", () => /"msg":"progress"/.test(stdout), { timeoutMs: 30_000 });
    await server.kill();
    await sleep(500);
    await server.restart();
    const timer = setTimeout(() => demo.kill("SIGKILL"), 150_000);
    const code = await exited;
    clearTimeout(timer);
    const summary = JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, number | string>;
    expect(code, `${stderr}\n${stdout.slice(-2000)}`).toBe(0);
    expect(summary).toMatchObject({ lost: 0, in_both: 0, left_in_queue: 0 });
    expect(Number(summary.processed) + Number(summary.dead_lettered)).toBe(summary.published);
    expect(summary.redelivered).toEqual(expect.any(Number));
  });
});
