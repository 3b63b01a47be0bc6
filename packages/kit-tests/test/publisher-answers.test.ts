// The publisher's handling of time and of each kind of answer, where a real stream cannot be made to
// give that answer when a test needs it: a stand-in on the real server answers the stream's subject
// with the bytes a stream sends (nats-server's acks and error answers), or holds its answer. What it
// pins: when a publish is sent again and when it is given up, how the window shrinks on a 429 and
// grows back, that a late answer is never taken for another message, the counts, and close().
import { connect, headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { createPublisher, type OutgoingMessage, type PublishResult, publishBatch } from "@repo/kit";
import { afterEach, describe, expect, it } from "vitest";

const e2e = serverForTests();
let n = 0;

const stored = (seq: number) => `{"stream":"STANDIN","seq":${seq}}`;
const refused = (code: number, err_code: number, description: string) =>
  `{"error":{"code":${code},"err_code":${err_code},"description":"${description}"},"stream":"STANDIN","seq":0}`;

interface Arrival {
  at: number;
  id?: string;
  m: Msg;
}

/** A stand-in stream on a subject of its own: every publish that arrives, and `answer` deciding what to do with it. */
function standIn(answer: (a: Arrival, all: Arrival[]) => string | undefined = () => undefined) {
  const subject = `standin.${++n}`;
  const all: Arrival[] = [];
  const sub = e2e.nc.subscribe(subject, {
    callback: (_err, m) => {
      const a = { at: Date.now(), id: m.headers?.get("Nats-Msg-Id") || undefined, m };
      all.push(a);
      const reply = answer(a, all);
      if (reply !== undefined) m.respond(reply);
    },
  });
  stops.push(() => sub.unsubscribe());
  return { subject, all, msg: (id?: string): OutgoingMessage => ({ subject, data: new Uint8Array(8), id }) };
}
const stops: (() => void)[] = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** Status listeners nats.js keeps on the connection: a publisher adds one (refusals) while it is open. */
const listeners = (nc: NatsConnection) => (nc as unknown as { protocol: { listeners: unknown[] } }).protocol.listeners.length;

describe("when a publish is sent again, and when it is given up", () => {
  it("with a msg id: again after timeoutMs, then twice as long, and given up after its attempts with a line saying so", async () => {
    const s = standIn(); // never answers
    const publisher = createPublisher(e2e.nc, { timeoutMs: 300, attempts: 3 });
    const start = Date.now();
    const result = await publisher.publish(s.msg("a"));
    const ended = Date.now() - start;
    publisher.close();
    expect(result).toMatchObject({ seq: 0, attempts: 3, error: "no ack after 3 attempts (first timeout 300ms)" });
    expect(s.all.map((a) => a.id)).toEqual(["a", "a", "a"]);
    const gaps = [s.all[1]!.at - s.all[0]!.at, s.all[2]!.at - s.all[1]!.at];
    expect(gaps[0]).toBeGreaterThanOrEqual(250);
    expect(gaps[0]).toBeLessThan(1_000); // not 4 × (a doubling that starts late) nor 5 s (the cap)
    expect(gaps[1]).toBeGreaterThanOrEqual(550);
    expect(ended).toBeGreaterThanOrEqual(300 + 600 + 1_200 - 20);
  });

  it("without a msg id: never sent again (it may be stored), failed after timeoutMs with a line saying so", async () => {
    const s = standIn();
    const publisher = createPublisher(e2e.nc, { timeoutMs: 300, attempts: 3 });
    const result = await publisher.publish(s.msg());
    await sleep(400);
    publisher.close();
    expect(result).toMatchObject({
      seq: 0,
      attempts: 1,
      error: "no ack within 300ms; without a msg id it is not resent (it may be stored)",
    });
    expect(s.all).toHaveLength(1);
  });

  it("answered 503 (nothing stored): again after 100 ms, 200, 400, and failed after its attempts with the server's words", async () => {
    const s = standIn(() => refused(503, 10008, "JetStream system temporarily unavailable"));
    // An ack timeout well past the answer: the sweep (every 100 ms) still times the pauses.
    const publisher = createPublisher(e2e.nc, { timeoutMs: 2_000, attempts: 4 });
    const result = await publisher.publish(s.msg("a"));
    publisher.close();
    expect(result).toMatchObject({ seq: 0, attempts: 4, code: 10008, error: "JetStream system temporarily unavailable" });
    expect(s.all).toHaveLength(4);
    const gaps = s.all.slice(1).map((a, i) => a.at - s.all[i]!.at);
    // The sweep runs every 100 ms: each pause ends at the first sweep after it.
    expect(gaps[0]).toBeGreaterThanOrEqual(95);
    expect(gaps[1]).toBeGreaterThanOrEqual(195);
    expect(gaps[2]).toBeGreaterThanOrEqual(395);
    expect(gaps[2]).toBeLessThan(800);
  });

  it("never takes the late answer to a publish sent twice for a later message", async () => {
    const held: Msg[] = [];
    const s = standIn((a, all) => {
      if (a.id === "a" && all.filter((x) => x.id === "a").length === 1)
        held.push(a.m); // its first send: answered late
      else if (a.id === "a") return stored(1);
      return undefined; // b: answered below
    });
    const publisher = createPublisher(e2e.nc, { timeoutMs: 200 });
    const a = await publisher.publish(s.msg("a"));
    expect(a).toMatchObject({ seq: 1, attempts: 2 });
    const b = publisher.publish(s.msg("b"));
    await waitFor("b sent", () => s.all.some((x) => x.id === "b"), { timeoutMs: 2_000 });
    held[0]!.respond(stored(99)); // a's first answer, late: a is done, and must not settle b
    await sleep(100);
    s.all.find((x) => x.id === "b")!.m.respond(stored(2));
    expect(await b).toMatchObject({ seq: 2, attempts: 1 });
    publisher.close();
  });
});

describe("the window", () => {
  it("publish(): never more than `window` in flight; each waits for a free slot", async () => {
    const s = standIn();
    const publisher = createPublisher(e2e.nc, { window: 4 });
    const results = Array.from({ length: 10 }, (_, i) => publisher.publish(s.msg(`m${i}`)));
    for (const round of [4, 4, 2]) {
      await waitFor(`${round} sent`, () => s.all.length >= round, { timeoutMs: 5_000 });
      await sleep(150); // one more would have come by now
      const open = s.all.splice(0);
      expect(open).toHaveLength(round);
      for (const a of open) a.m.respond(stored(Number(a.id!.slice(1)) + 1));
    }
    expect((await Promise.all(results)).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    publisher.close();
  });

  it("publish(): flush() resolves only once every publish made so far has its result, those waiting for a slot too", async () => {
    const s = standIn((a) => stored(Number(a.id!.slice(1)) + 1)); // answers each at once
    const publisher = createPublisher(e2e.nc, { window: 4 });
    let settled = 0;
    const results = Array.from({ length: 10 }, (_, i) => publisher.publish(s.msg(`m${i}`)).finally(() => settled++));
    await publisher.flush();
    expect(settled).toBe(10);
    expect((await Promise.all(results)).map((r) => r.error)).toEqual(Array(10).fill(undefined));
    publisher.close();
  });

  it("publish(): the window a 429 halved grows back to the whole window for callers waiting on publish(), answers coming one at a time", async () => {
    const s = standIn();
    const publisher = createPublisher(e2e.nc, { window: 8, timeoutMs: 10_000 });
    const results = Array.from({ length: 40 }, (_, i) => publisher.publish(s.msg(`m${i}`)));
    await waitFor("8 sent", () => s.all.length >= 8, { timeoutMs: 5_000 });
    for (const a of s.all.splice(0)) a.m.respond(refused(429, 10167, "too many requests")); // 8 → 4
    await waitFor("the 8 sent again", () => s.all.length >= 8, { timeoutMs: 5_000 });
    let seq = 0;
    // One answer at a time: each stored one grows the window by one, and it is used.
    for (let i = 0; i < 12; i++) {
      s.all.shift()!.m.respond(stored(++seq));
      await sleep(30);
    }
    await sleep(150);
    expect(s.all.length).toBe(8);
    for (const a of s.all.splice(0)) a.m.respond(stored(++seq));
    publisher.close();
    await Promise.all(results);
  });

  it("a 429: halved once for answers that come together, those refused sent again `limit` at a time, grown back by one per stored message, never past `window`", async () => {
    let mode: "hold" | "store" = "hold";
    let seq = 0;
    const s = standIn(() => (mode === "store" ? stored(++seq) : undefined));
    const publisher = createPublisher(e2e.nc, { window: 8, timeoutMs: 10_000 });
    const msgs = Array.from({ length: 40 }, (_, i) => s.msg(`m${i}`));
    const all = publisher.publishAll(msgs);
    await sleep(200);
    const first = s.all.splice(0);
    expect(first).toHaveLength(8);
    // All eight refused at once: the stream's ingest queue was full. The window halves once (8 → 4).
    for (const a of first) a.m.respond(refused(429, 10167, "too many requests"));
    await sleep(400);
    const again = s.all.splice(0);
    expect(again.map((a) => a.id).sort()).toEqual(first.map((a) => a.id).sort()); // the same eight, nothing new
    // Sent again at most four per sweep (sweeps are 100 ms apart): never five within 50 ms.
    const at = again.map((a) => a.at).sort((x, y) => x - y);
    const together = Math.max(...at.map((t) => at.filter((u) => u >= t && u - t < 50).length));
    expect(together).toBeLessThanOrEqual(4);
    // Stored now: each stored one grows the window back by one, up to 8 and no further.
    for (const a of again) a.m.respond(stored(++seq));
    const inFlight: number[] = [];
    for (let round = 0; round < 3; round++) {
      await sleep(200);
      const open = s.all.splice(0);
      inFlight.push(open.length);
      for (const a of open) a.m.respond(stored(++seq));
    }
    expect(inFlight).toEqual([8, 8, 8]);
    mode = "store";
    for (const a of s.all.splice(0)) a.m.respond(stored(++seq));
    expect(await all).toEqual({ stored: 40, duplicates: 0, retried: 8, failed: 0 });
    publisher.close();
  });
});

describe("each answer read as what it is", () => {
  it("a stored ack the fast read does not know (fields in another order) is read all the same; unreadable answers are errors quoting 80 characters", async () => {
    const long = "x".repeat(200);
    const answers: Record<string, string> = {
      reordered: '{"seq":7,"stream":"STANDIN"}',
      unreadable: long,
      noseq: `{"stream":"STANDIN","note":"${long}"}`,
    };
    const s = standIn((a) => answers[a.id!]);
    const publisher = createPublisher(e2e.nc, { timeoutMs: 2_000 });
    const [reordered, unreadable, noseq] = await Promise.all(Object.keys(answers).map((id) => publisher.publish(s.msg(id))));
    publisher.close();
    expect(reordered).toMatchObject({ seq: 7, duplicate: false, error: undefined });
    expect(unreadable).toMatchObject({ seq: 0, error: `unreadable ack: ${long.slice(0, 80)}` });
    expect(noseq).toMatchObject({ seq: 0, error: `ack without a sequence: ${answers.noseq!.slice(0, 80)}` });
  });

  it("sends the msg id and the expected stream beside the message's own headers, and a plain message as it is", async () => {
    const s = standIn(() => stored(1));
    const withId = createPublisher(e2e.nc, { stream: "STANDIN" });
    const plain = createPublisher(e2e.nc);
    const own = s.msg("a");
    own.headers = headers();
    own.headers.set("Order", "o-1");
    await withId.publish(own);
    await plain.publish(s.msg("b"));
    await plain.publish(s.msg());
    withId.close();
    plain.close();
    const [a, b, c] = s.all.map((x) => x.m.headers);
    expect([a?.get("Nats-Msg-Id"), a?.get("Nats-Expected-Stream"), a?.get("Order")]).toEqual(["a", "STANDIN", "o-1"]);
    expect([b?.get("Nats-Msg-Id"), b?.has("Nats-Expected-Stream")]).toEqual(["b", false]);
    expect(c).toBeUndefined();
  });
});

describe("counts, close() and the connection", () => {
  it("publishAll counts stored, duplicates, sent again and failed, with no onResult", async () => {
    const s = standIn((a, all) => {
      if (a.id === "again" && all.filter((x) => x.id === "again").length === 1) return undefined; // its first send times out
      if (a.id === "dup") return '{"stream":"STANDIN","seq":1,"duplicate":true}';
      if (a.id === "bad") return refused(400, 10060, "expected stream does not match");
      return stored(a.id === "again" ? 2 : 3);
    });
    const publisher = createPublisher(e2e.nc, { timeoutMs: 300 });
    const tally = await publisher.publishAll(["again", "ok", "dup", "bad"].map((id) => s.msg(id)));
    publisher.close();
    expect(tally).toEqual({ stored: 2, duplicates: 1, retried: 1, failed: 1 });
  });

  it("publishBatch rejects naming how many and the first failure with its id, and leaves nothing listening either way", async () => {
    const s = standIn((a) => (a.id === "ok" ? stored(1) : refused(400, 10060, `refused ${a.id}`)));
    const before = listeners(e2e.nc);
    const results: PublishResult[] = [];
    await expect(
      publishBatch(
        e2e.nc,
        ["ok", "b", "c"].map((id) => s.msg(id)),
        { what: "things" },
        (r) => results.push(r),
      ),
    ).rejects.toThrow(/^2 things not published, e\.g\. b: refused b$/);
    expect(results.map((r) => r.error)).toEqual([undefined, "refused b", "refused c"]);
    expect(listeners(e2e.nc)).toBe(before);
    expect(await publishBatch(e2e.nc, [s.msg("ok")], { what: "things" })).toMatchObject({ stored: 1, failed: 0 });
    expect(listeners(e2e.nc)).toBe(before);
  });

  it("flush() with nothing in flight resolves at once; close() ends what is in flight with an error, and a publish after it is not sent", async () => {
    const s = standIn(); // never answers
    const publisher = createPublisher(e2e.nc, { timeoutMs: 5_000 });
    await publisher.flush();
    const pending = publisher.publish(s.msg("a"));
    await waitFor("a sent", () => s.all.length === 1, { timeoutMs: 2_000 });
    publisher.close();
    expect(await pending).toMatchObject({ seq: 0, error: "publisher closed before the ack" });
    expect(await publisher.publish(s.msg("b"))).toMatchObject({ seq: 0, attempts: 0, error: "publisher closed" });
    await sleep(100);
    expect(s.all.map((a) => a.id)).toEqual(["a"]);
  });

  it("a publish on a connection closed since fails with the reason, at once", async () => {
    const nc = await connect({ servers: e2e.server.url });
    const publisher = createPublisher(nc, { timeoutMs: 5_000 });
    await nc.close();
    const result = await publisher.publish({ subject: "anywhere", data: new Uint8Array(1), id: "x" });
    publisher.close();
    expect(result).toMatchObject({ seq: 0, attempts: 1 });
    expect(result.error).toMatch(/closed/i);
  });
});
