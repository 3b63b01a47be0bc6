// Clients cut off from the server for longer than ack_wait: the server is stopped and started again.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { publishPipelined } from "@patterns/dedup-publish/producer";
import { type RetryPolicy, STREAM, setup } from "@patterns/work-queue/setup";
import { type Outcome, startWorker, type Worker } from "@patterns/work-queue/worker";
import { sleep, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { jobs, serverPerTest } from "./helpers.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const retry: RetryPolicy = { backoffMs: [500], maxDeliver: 10 };
const fresh = serverPerTest();

describe("disconnected for longer than ack_wait", () => {
  it("loses no job: unacked ones are redelivered after the workers reconnect", async () => {
    const server = await fresh.start();
    const opts = { servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 };
    const nc = await connect(opts);
    fresh.connections.push(nc);
    await setup(await jetstreamManager(nc), retry);
    const processed = new Map<string, number>();
    const onOutcome = (o: Outcome) => void (o.kind === "processed" && processed.set(o.job.id, (processed.get(o.job.id) ?? 0) + 1));
    const workers: Worker[] = [];
    for (const name of ["a", "b", "c"]) {
      const wnc = await connect(opts);
      fresh.connections.push(wnc);
      workers.push(await startWorker({ nc: wnc, name, log, retry, concurrency: 2, onOutcome, handler: async () => void (await sleep(5)) }));
    }
    const all = jobs("d", 600, 1_000_000); // no poison
    expect((await publishPipelined(nc, all, { stream: STREAM })).filter((r) => r.error)).toEqual([]);
    await waitFor("a sixth processed", () => processed.size >= 100);
    await server.halt(); // everyone is cut off, jobs in hand
    await sleep(4 * retry.backoffMs[0]!); // well past ack_wait
    await server.restart();
    await waitFor("every job processed", () => processed.size === all.length, { timeoutMs: 60_000 });
    await waitFor("the work stream drained", async () => (await (await jetstreamManager(nc)).streams.info(STREAM)).state.messages === 0);
    expect(processed.size).toBe(all.length); // nothing lost; a job in hand at the cut may have run twice
    await Promise.all(workers.map((w) => w.stop()));
  });
});
