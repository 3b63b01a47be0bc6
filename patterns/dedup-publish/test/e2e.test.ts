import { spawn } from "node:child_process";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { freePort, serverForTests, sleep, startCluster, waitFor } from "@repo/harness";
import { versionAtLeast } from "@repo/kit";
import { beforeEach, describe, expect, it } from "vitest";
import { type Outgoing, payment, publishIdempotent, publishPipelined, tally } from "../src/producer.js";
import { readStored, storedTwice } from "../src/reader.js";
import { STREAM, setup } from "../src/setup.js";

const e2e = serverForTests({ reconnect: true });

beforeEach(async () => {
  await e2e.jsm.streams.delete(STREAM).catch(() => {});
  await setup(e2e.jsm, 60_000);
});

const payments = (prefix: string, n: number): Outgoing[] => Array.from({ length: n }, (_, i) => payment(`${prefix}-${i}`, i));

async function expectEachIdOnce(ids: string[]) {
  const stored = await readStored(e2e.nc);
  expect(storedTwice(stored)).toEqual([]);
  expect(stored.length).toBe(ids.length);
  expect(new Set(stored.map((s) => s.id))).toEqual(new Set(ids));
}

describe(`dedup-publish on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("stores each id once however often it is sent, and reports the extra sends as duplicates", async () => {
    const unique = payments("p", 300);
    // Every third payment is sent three times, the copies racing each other in the same pipeline.
    const sends = unique.flatMap((m, i) => (i % 3 === 0 ? [m, m, m] : [m]));
    const results = await publishPipelined(e2e.nc, sends, { window: 64 });
    expect(tally(results)).toMatchObject({ stored: 300, duplicates: 200, failed: 0 });
    // Per id: exactly one send was stored, the rest were duplicates pointing at the same sequence.
    for (const m of unique) {
      const mine = results.filter((r) => r.id === m.id);
      expect(mine.filter((r) => !r.duplicate)).toHaveLength(1);
      expect(new Set(mine.map((r) => r.seq)).size).toBe(1);
    }
    await expectEachIdOnce(unique.map((m) => m.id));
  });

  it("retries after ack timeouts with the same id and never stores twice", async () => {
    const msgs = payments("t", 500);
    const results = await publishPipelined(e2e.nc, msgs, { window: 256, timeoutMs: 1 });
    const t = tally(results);
    expect(t.failed).toBe(0);
    expect(t.retried).toBeGreaterThan(0); // the 1ms timeout did force retries
    // Whichever answer came first counts: the first send's late ack ("stored") or the resend's ("duplicate").
    expect(t.stored + t.duplicates).toBe(500);
    await expectEachIdOnce(msgs.map((m) => m.id));
  });

  it("never changes an existing stream's duplicate window: the demo's setup refuses in one line, the service's takes it", async () => {
    const before = (await e2e.jsm.streams.info(STREAM)).config.duplicate_window;
    await expect(setup(e2e.jsm, 2_000)).rejects.toThrow(
      /^stream PAYMENTS exists with duplicate_window=60000000000 but this pattern needs duplicate_window=2000000000/,
    );
    await setup(e2e.jsm); // the service: whatever window the operator chose
    expect((await e2e.jsm.streams.info(STREAM)).config.duplicate_window).toBe(before);
  });

  it("stores the same id again once the duplicate window has passed", async () => {
    const windowMs = 1_000;
    await e2e.jsm.streams.delete(STREAM);
    await setup(e2e.jsm, windowMs);
    expect((await e2e.jsm.streams.info(STREAM)).config.duplicate_window).toBe(windowMs * 1_000_000);
    const js = jetstream(e2e.nc);
    const m = payment("edge", 1);
    const first = await publishIdempotent(js, m);
    const inside = await publishIdempotent(js, m);
    expect(first.duplicate).toBe(false);
    expect(inside).toMatchObject({ duplicate: true, seq: first.seq });
    const start = performance.now();
    await sleep(windowMs);
    // The server forgets ids on a timer, so allow it a little past the window (bounded).
    let after = await publishIdempotent(js, m);
    for (let i = 0; i < 20 && after.duplicate; i++) after = await sleep(100).then(() => publishIdempotent(js, m));
    expect(performance.now() - start).toBeGreaterThanOrEqual(windowMs);
    expect(after.duplicate).toBe(false);
    expect(after.seq).toBeGreaterThan(first.seq);
    expect((await readStored(e2e.nc)).map((s) => s.id)).toEqual(["edge", "edge"]);
  });

  it("a publisher interrupted mid-stream (connection closed) and restarted with the same ids stores each once", async () => {
    const msgs = payments("i", 1_000);
    const first = await connect({ servers: e2e.server.url });
    const run = publishPipelined(first, msgs, { window: 32, attempts: 1 });
    // Close the connection once a few hundred are through.
    await waitFor("300 stored", async () => (await e2e.jsm.streams.info(STREAM)).state.messages >= 300, { everyMs: 5 });
    await first.close();
    const interrupted = await run;
    const storedBefore = (await e2e.jsm.streams.info(STREAM)).state.messages;
    expect(interrupted.some((r) => r.error)).toBe(true); // it really was cut off
    expect(storedBefore).toBeLessThan(1_000);

    // The restarted producer does not know what got through: it sends everything again.
    const second = await connect({ servers: e2e.server.url });
    const results = await publishPipelined(second, msgs, { window: 64 });
    await second.close();
    const t = tally(results);
    expect(t.failed).toBe(0);
    expect(t.duplicates).toBe(storedBefore);
    expect(t.stored).toBe(1_000 - storedBefore);
    await expectEachIdOnce(msgs.map((m) => m.id));
  });

  it.skipIf(!!process.env.NATS_URL)("carries on across a server restart, retrying with the same ids: each stored once", async () => {
    const msgs = payments("r", 600);
    const run = publishPipelined(e2e.nc, msgs, { window: 16, timeoutMs: 500, attempts: 30 });
    await waitFor("200 stored", async () => (await e2e.jsm.streams.info(STREAM)).state.messages >= 200, { everyMs: 5 });
    await e2e.server.restart(); // same port, same store dir
    const results = await run;
    const t = tally(results);
    expect(results.filter((r) => r.error).slice(0, 3)).toEqual([]);
    expect(t.failed).toBe(0);
    expect(t.stored + t.duplicates).toBe(600);
    await waitFor("reconnected", () => !e2e.nc.isClosed() && e2e.nc.info !== undefined);
    await expectEachIdOnce(msgs.map((m) => m.id));
  });

  it("surfaces a non-retryable error per message instead of retrying it", async () => {
    const js = jetstream(e2e.nc);
    const wrong = { subject: "payments.captured", id: "x", data: new Uint8Array() };
    // Expecting the wrong stream is a server-side rejection: not retried, reported on that message.
    const r = await js.publish(wrong.subject, wrong.data, { msgID: "x", expect: { streamName: "NOT_PAYMENTS" } }).then(
      () => "stored",
      (err: Error) => err.message,
    );
    expect(r).toMatch(/expected stream does not match/i);
    const res = await publishPipelined(e2e.nc, [payment("ok", 1), { ...payment("nowhere", 2), subject: "nowhere.captured" }], {
      attempts: 2,
      timeoutMs: 200,
    });
    expect(res[0]).toMatchObject({ id: "ok", duplicate: false });
    expect(res[0]!.error).toBeUndefined();
    expect(res[1]!.error).toMatch(/no responders|timeout/i);
    expect(res[1]!.attempts).toBe(2);
  });
});

describe("the ingest service (src/service.ts, a starter's npm start)", () => {
  it("stores a payment sent twice once, answers a malformed one 400, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const service = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      env: { ...process.env, NATS_URL: e2e.server.url, INGEST_PORT: String(port), LOG_FORMAT: "json" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    service.stdout.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => service.once("exit", resolve));
    try {
      await waitFor("the service accepting", () => out.includes("accepting payments"), { timeoutMs: 20_000 });
      const post = (body: string) => fetch(`http://127.0.0.1:${port}/payments`, { method: "POST", body });
      const first = await post(JSON.stringify({ id: "pay-1", amount: 250 }));
      const again = await post(JSON.stringify({ id: "pay-1", amount: 250 })); // a client retrying after a lost answer
      expect([first.status, again.status]).toEqual([200, 200]);
      const [a, b] = [
        (await first.json()) as { seq: number; duplicate: boolean },
        (await again.json()) as { seq: number; duplicate: boolean },
      ];
      expect(a.duplicate).toBe(false);
      expect(b).toEqual({ id: "pay-1", seq: a.seq, duplicate: true });
      expect((await post("not json")).status).toBe(400);
      expect((await post(JSON.stringify({ id: "has space", amount: 1 }))).status).toBe(400);
      expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(1);
      service.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (service.exitCode === null) service.kill("SIGKILL");
    }
  });
});

describe("dedup-publish on a 3-node cluster (an R3 stream)", () => {
  it("stores once copies of one id sent at once, each answered stored or duplicate: one in process (10158) is tried again", async () => {
    const cluster = await startCluster();
    const saved = process.env.NATS_REPLICAS;
    process.env.NATS_REPLICAS = "3";
    const senders = await Promise.all(Array.from({ length: 8 }, () => connect({ servers: cluster.url.split(",") })));
    try {
      await setup(await jetstreamManager(senders[0]!), 60_000);
      for (let round = 0; round < 10; round++) {
        const msg = payment(`copy-${round}`, round);
        const results = await Promise.all(senders.map((s) => publishIdempotent(jetstream(s), msg)));
        expect(results.map((r) => r.error ?? "ok")).toEqual(senders.map(() => "ok"));
        const [stored, ...more] = [...results.filter((r) => !r.duplicate), ...results.filter((r) => r.duplicate)];
        expect(results.filter((r) => !r.duplicate)).toHaveLength(1); // one stored, the other seven duplicates
        // A duplicate's seq is the stored copy's; on 2.10 in a cluster it is 0 for a copy that came while
        // the first was being stored (the server staged its msg id with seq 0).
        const seqs = versionAtLeast(cluster.version, "2.11.0") ? [stored!.seq] : [stored!.seq, 0];
        for (const d of more) expect(seqs).toContain(d.seq);
      }
      const info = await (await jetstreamManager(senders[0]!)).streams.info(STREAM);
      expect(info.state.messages).toBe(10);
    } finally {
      for (const s of senders) await s.close();
      if (saved === undefined) delete process.env.NATS_REPLICAS;
      else process.env.NATS_REPLICAS = saved;
      await cluster.stop();
    }
  });
});
