// Bad input gets a clear error, never a silent success or a changed stream.
import { type JetStreamManager, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { payment, publishIdempotent } from "@patterns/dedup-publish/producer";
import { setup as setupDedup } from "@patterns/dedup-publish/setup";
import { setup as setupFanout } from "@patterns/fanout/setup";
import { setup as setupLedger } from "@patterns/ordered-replay/setup";
import { setup as setupPriority } from "@patterns/priority-queue/setup";
import { DlqHeaders } from "@patterns/work-queue/dead-letter";
import { DLQ_STREAM, STREAM as JOBS, setup as setupWork } from "@patterns/work-queue/setup";
import { type Outcome, startWorker } from "@patterns/work-queue/worker";
import { type NatsServer, startServer, waitFor } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const log = pino({ level: "silent" });
let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;

beforeAll(async () => {
  server = await startServer({ config: "max_payload: 65536" });
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("bad input", () => {
  it("rejects an oversized payload with a clear max_payload error, without retrying", async () => {
    await setupDedup(jsm);
    const big = { ...payment("big", 1), data: new Uint8Array(100_000) };
    const r = await publishIdempotent(jetstream(nc), big, { attempts: 5, timeoutMs: 500 });
    expect(r.error).toMatch(/max.?payload|payload.*exceed|exceed.*payload/i);
    expect(r.attempts).toBe(1);
  });

  it("says clearly that no stream listens on a subject outside every stream", async () => {
    const r = await publishIdempotent(jetstream(nc), { ...payment("lost", 1), subject: "nowhere.at.all" }, { attempts: 2, timeoutMs: 200 });
    expect(r.error).toBe("no stream answered on nowhere.at.all (no responders): is the stream created and JetStream enabled?");
  });

  const conflicts: [string, string, () => Promise<unknown>, Record<string, unknown>][] = [
    ["work-queue", JOBS, () => setupWork(jsm), { subjects: ["jobs.>"], retention: RetentionPolicy.Limits }],
    ["fanout", "ORDERS_INTEREST", () => setupFanout(jsm), { subjects: ["interest.orders.>"], retention: RetentionPolicy.Limits }],
    ["dedup-publish", "PAYMENTS", () => setupDedup(jsm), { subjects: ["payments.>"], storage: StorageType.Memory }],
    ["ordered-replay", "LEDGER", () => setupLedger(jsm, nc), { subjects: ["ledger.>"], retention: RetentionPolicy.Workqueue }],
    [
      "priority-queue",
      "TASKS",
      () => setupPriority(jsm, nc.info!.version),
      { subjects: ["tasks.high", "tasks.normal", "tasks.low"], retention: RetentionPolicy.Interest },
    ],
  ];
  for (const [pattern, stream, run, config] of conflicts) {
    it(`${pattern}: reports an existing ${stream} stream with the wrong config instead of changing it`, async () => {
      await jsm.streams.delete(stream).catch(() => {});
      await jsm.streams.add({ name: stream, ...config });
      await expect(run()).rejects.toThrow(
        new RegExp(`^stream ${stream} exists with (retention|storage)=.* but this pattern needs .* — delete it`),
      );
      const after = (await jsm.streams.info(stream)).config;
      for (const [k, v] of Object.entries(config)) expect(after[k as keyof typeof after]).toEqual(v); // untouched
      await jsm.streams.delete(stream);
    });
  }

  it("work-queue: invalid JSON lands in the DLQ with the parse error", async () => {
    await jsm.streams.delete(JOBS).catch(() => {});
    await setupWork(jsm, { backoffMs: [200], maxDeliver: 3 });
    const outcomes: Outcome[] = [];
    const worker = await startWorker({ nc, name: "w", log, handler: async () => {}, onOutcome: (o) => void outcomes.push(o) });
    await jetstream(nc).publish("jobs.resize", '{"id": "x", "task": ', { msgID: "broken" });
    await waitFor("dead-lettered", () => outcomes.some((o) => o.kind === "dead_lettered"));
    await worker.stop();
    const [dead] = await storedMessages(jsm, DLQ_STREAM);
    expect(dead!.header.get(DlqHeaders.Reason)).toMatch(/^malformed payload: invalid JSON: /);
    expect(dead!.header.get(DlqHeaders.Deliveries)).toBe("1");
    expect(new TextDecoder().decode(dead!.data)).toBe('{"id": "x", "task": ');
  });
});
