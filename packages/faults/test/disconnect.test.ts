// Clients cut off from the server for longer than ack_wait: the server is stopped and started again.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { publishPipelined } from "@patterns/dedup-publish/producer";
import { type RetryPolicy, STREAM, setup } from "@patterns/work-queue/setup";
import { type Outcome, startWorker, type Worker } from "@patterns/work-queue/worker";
import { type NatsServer, sleep, startServer, waitFor } from "@repo/harness";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { jobs } from "./helpers.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const retry: RetryPolicy = { backoffMs: [500], maxDeliver: 10 };
let server: NatsServer | undefined;
const conns: NatsConnection[] = [];
afterEach(async () => {
  for (const c of conns.splice(0)) await c.close();
  await server?.stop();
});

describe("disconnected for longer than ack_wait", () => {
  it("loses no job: unacked ones are redelivered after the workers reconnect", async () => {
    server = await startServer();
    const opts = { servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 };
    const nc = await connect(opts);
    conns.push(nc);
    await setup(await jetstreamManager(nc), retry);
    const processed = new Map<string, number>();
    const onOutcome = (o: Outcome) => void (o.kind === "processed" && processed.set(o.job.id, (processed.get(o.job.id) ?? 0) + 1));
    const workers: Worker[] = [];
    for (const name of ["a", "b", "c"]) {
      const wnc = await connect(opts);
      conns.push(wnc);
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
