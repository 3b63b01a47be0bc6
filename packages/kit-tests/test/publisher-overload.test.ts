// The kit's publisher against a stream whose ingest queue is full: nats-server 2.11+ answers such a
// publish with 429 "too many requests" (err_code 10167) and does not store it. A passing refusal:
// the publisher sends it again later, and every message ends stored once, read back. At a queue of 64
// (here) that takes seconds; at 4 the publisher's resend pace (a window of refused messages per 100 ms
// sweep) takes minutes: a queue that small is not one a server runs with (the default is 10,000).
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { findServerBinary, type NatsServer, startCluster, startServer } from "@repo/harness";
import { createPublisher, placed, storedMessages, versionAtLeast } from "@repo/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  // The stream's ingest queue holds 64 messages (max_buffered_msgs, nats-server >= 2.11; older ones
  // refuse the setting, and have no such limit to hit).
  const limited = versionAtLeast(findServerBinary().version, "2.11.0");
  server = await startServer({ config: limited ? "jetstream { max_buffered_msgs: 64 }" : "" });
  nc = await connect({ servers: server.url });
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe(`the publisher under a full ingest queue on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("sends a message refused with 429 (10167, too many requests) again: all 20,000 stored once, in the stream", async (ctx) => {
    if (!versionAtLeast(nc.info?.version, "2.11.0")) ctx.skip(); // no ingest limit to hit before 2.11
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "BUSY", subjects: ["busy.>"], storage: "file" as never });
    // A probe: the same burst on the raw API gets 429s, so the test below meets the refusal it is about.
    const refused = await rawBurst(nc, 2_000);
    expect(refused, "429 answers to a raw burst").toBeGreaterThan(0);
    await jsm.streams.purge("BUSY");
    // attempts: 1: a message is sent once, but a 429 does not count as an attempt (nothing was stored).
    const publisher = createPublisher(nc, { stream: "BUSY", window: 1024, attempts: 1, timeoutMs: 10_000 });
    const count = 20_000;
    const codes = new Map<string, number>();
    const r = await publisher.publishAll(
      (function* () {
        for (let i = 0; i < count; i++) yield { subject: "busy.x", data: new Uint8Array(64), id: `m-${i}` };
      })(),
      (result) => {
        if (result.error) codes.set(`${result.code}: ${result.error}`, (codes.get(`${result.code}: ${result.error}`) ?? 0) + 1);
      },
    );
    publisher.close();
    expect(Object.fromEntries(codes)).toEqual({});
    expect(r.stored).toBe(count);
    const stored = await storedMessages(jsm, "BUSY");
    const ids = stored.map((m) => m.header.get("Nats-Msg-Id"));
    expect(new Set(ids).size).toBe(count);
    expect(ids.length).toBe(count);
  });
});

/** Publishes `n` messages at once on core NATS with a reply inbox each; returns how many were answered 429. */
async function rawBurst(nc: NatsConnection, n: number): Promise<number> {
  let answered = 0;
  let tooMany = 0;
  const inbox = `_INBOX.burst.${Date.now()}`;
  const done = new Promise<void>((resolve) => {
    nc.subscribe(`${inbox}.*`, {
      callback: (_e, m) => {
        if (m.headers?.code === 429 || m.string().includes('"err_code":10167')) tooMany++;
        if (++answered === n) resolve();
      },
    });
  });
  for (let i = 0; i < n; i++) nc.publish("busy.x", new Uint8Array(64), { reply: `${inbox}.${i}` });
  await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))]);
  return tooMany;
}

describe(`the publisher on a 3-node cluster (an R3 stream), nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("takes copies of one id sent at once as one stored and the rest duplicates, whatever seq a duplicate's answer has", async () => {
    const cluster = await startCluster();
    const senders = await Promise.all(Array.from({ length: 8 }, () => connect({ servers: cluster.url.split(",") })));
    try {
      const jsm = await jetstreamManager(senders[0]!);
      await placed(() => jsm.streams.add({ name: "COPIES", subjects: ["copies.>"], storage: "file" as never, num_replicas: 3 }));
      const publishers = senders.map((s) => createPublisher(s, { stream: "COPIES" }));
      for (let round = 0; round < 10; round++) {
        const results = await Promise.all(
          publishers.map((p) => p.publish({ subject: "copies.x", data: new Uint8Array(8), id: `copy-${round}` })),
        );
        expect(results.map((r) => r.error ?? "ok")).toEqual(publishers.map(() => "ok"));
        expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
      }
      for (const p of publishers) p.close();
      expect((await jsm.streams.info("COPIES")).state.messages).toBe(10);
    } finally {
      for (const s of senders) await s.close();
      await cluster.stop();
    }
  });
});
