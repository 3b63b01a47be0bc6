// Work-queue worker processes killed with SIGKILL in the middle of a run.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { publishPipelined } from "@patterns/dedup-publish/producer";
import { DLQ_STREAM, type RetryPolicy, STREAM, setup } from "@patterns/work-queue/setup";
import { waitFor } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import { describe, expect, it } from "vitest";
import { jobs, Ledger, serverPerTest, spawnWorker } from "./helpers.js";

const retry: RetryPolicy = { backoffMs: [500, 500, 500], maxDeliver: 3 };
const fresh = serverPerTest();
const workers = fresh.processes;

describe("work-queue worker processes killed mid-run", () => {
  it("redelivers the killed workers' jobs: processed + dead-lettered = published, none in both", async () => {
    const server = await fresh.start();
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    await setup(jsm, retry);
    const ledger = new Ledger();
    for (const name of ["w1", "w2", "w3"]) workers.push(spawnWorker(name, server.url, retry, ledger));
    await Promise.all(workers.map((w) => w.ready));

    const all = jobs("job", 600);
    const poison = all.filter((j) => j.subject === "jobs.poison").length;
    const published = await publishPipelined(nc, all, { stream: STREAM });
    expect(published.filter((r) => r.error)).toEqual([]);

    await waitFor("a third processed", () => ledger.processed.size >= 200, { timeoutMs: 30_000 });
    await workers[0]!.kill(); // SIGKILL, jobs in hand
    await waitFor("two thirds processed", () => ledger.processed.size >= 400, { timeoutMs: 30_000 });
    await workers[1]!.kill();
    workers.push(spawnWorker("w4", server.url, retry, ledger));
    await waitFor("every job accounted for", () => ledger.accounted() >= all.length, { timeoutMs: 60_000 });

    expect(ledger.accounted()).toBe(all.length);
    expect(ledger.inBoth()).toEqual([]);
    expect(ledger.deadLettered.size).toBe(poison);
    // The workers print a job before acking it: the last acks may still be on their way.
    await waitFor("the work stream drained", async () => (await jsm.streams.info(STREAM)).state.messages === 0);
    const dlq = await storedMessages(jsm, DLQ_STREAM);
    expect(dlq.length).toBe(poison); // each dead letter stored once
    await nc.close();
  });
});
