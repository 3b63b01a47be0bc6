// The kit's pull(): the loop the projection, the applier, the runner and the fanout subscribers share.
// Every message in hand is kept alive (working()) while the ones before it are handled, a handler
// error never ends the loop, and with keyOf a message whose handler failed is never overtaken by a
// later message of its key.
import { AckPolicy, type JsMsg, jetstream } from "@nats-io/jetstream";
import { connect, headers, nanos } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { createLogger, MalformedPayload, pull, type Serving, versionAtLeast } from "@repo/kit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const e2e = serverForTests();

const log = createLogger("pull-test");
log.level = process.env.LOG_LEVEL ?? "silent";
const running: Serving[] = [];

beforeEach(async () => {
  await e2e.jsm.streams.delete("PULLED").catch(() => {});
  await e2e.jsm.streams.add({ name: "PULLED", subjects: ["pulled.>"], storage: "memory" as never });
  await e2e.jsm.consumers.add("PULLED", { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: nanos(1_000) });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

type PullOptions = Parameters<typeof pull>[2];
const start = async (handle: (m: JsMsg) => Promise<void>, extra: Partial<PullOptions>) => {
  const consumer = await jetstream(e2e.nc).consumers.get("PULLED", "c");
  running.push(await pull(consumer, handle, { nc: e2e.nc, log, who: { test: "pull" }, batch: 8, ...extra }));
};

describe(`the kit's pull() on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("leaves nothing listening on its connection once stopped: 5 loops started and stopped add no status listener", async () => {
    // nats.js keeps a connection's status listeners here; a loop watches it for refusals to pull.
    const listeners = () => (e2e.nc as unknown as { protocol: { listeners: unknown[] } }).protocol.listeners.length;
    const before = listeners();
    for (let i = 0; i < 5; i++) await start(async () => {}, { expiresMs: 500 });
    expect(listeners()).toBeGreaterThan(before);
    await Promise.all(running.splice(0).map((s) => s.stop()));
    expect(listeners()).toBe(before);
  });

  it("keeps every message in hand alive while the ones before it run: 8 handlers of 300 ms past a 1 s ack_wait, each once", async () => {
    for (let i = 0; i < 8; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    const runs: { seq: number; delivery: number }[] = [];
    await start(
      async (m) => {
        runs.push({ seq: m.seq, delivery: m.info.deliveryCount });
        await sleep(300);
        m.ack();
      },
      { batch: 8 },
    );
    await waitFor("8 handled", () => runs.length >= 8, { timeoutMs: 10_000 });
    await sleep(1_500); // a message that ran out its ack_wait in hand would come again now
    expect(runs.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(runs.filter((r) => r.delivery > 1)).toEqual([]);
  });

  it("hands out its hand in stream order: a redelivered earlier message goes before the later ones still waiting", async () => {
    for (let i = 1; i <= 10; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    // Another instance takes seq 1 and never answers: the server hands it out again after the 1 s
    // ack_wait, into the pull below, whose hand then still holds 6..10.
    const other = await (await jetstream(e2e.nc).consumers.get("PULLED", "c")).fetch({ max_messages: 1, expires: 1_000 });
    for await (const m of other) expect(m.seq).toBe(1);
    const order: number[] = [];
    await start(
      async (m) => {
        order.push(m.seq);
        await sleep(250);
        m.ack();
      },
      { batch: 10 },
    );
    await waitFor("10 handled", () => order.length >= 10, { timeoutMs: 10_000, detail: () => order });
    await sleep(500);
    expect([...order].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // each once
    // Once seq 1 is in hand it is the next one handled: the rest, before and after it, in order.
    const at = order.indexOf(1);
    expect(at).toBeLessThan(9);
    expect(order.filter((s) => s !== 1)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("with keyOf, a message acked before its handler threw holds nothing: the next of its key comes at once", async () => {
    for (const s of ["a.1", "a.2"]) await jetstream(e2e.nc).publish(`pulled.${s.split(".")[0]}`, s);
    const runs: { seq: number; delivery: number }[] = [];
    await start(
      async (m) => {
        runs.push({ seq: m.seq, delivery: m.info.deliveryCount });
        m.ack();
        if (m.seq === 1) throw new Error("after its ack");
      },
      { keyOf: (m) => m.subject },
    );
    await waitFor("both handled", () => runs.length >= 2, { timeoutMs: 5_000, detail: () => runs });
    expect(runs).toEqual([
      { seq: 1, delivery: 1 },
      { seq: 2, delivery: 1 }, // was: handed back behind seq 1's hold, delivery 2
    ]);
  });

  it("with keyOf, never handles a later message of a key before one of that key that failed", async () => {
    for (const s of ["a.1", "b.1", "a.2", "a.3", "b.2"]) await jetstream(e2e.nc).publish(`pulled.${s.split(".")[0]}`, s);
    const handled: string[] = [];
    let failed = false;
    await start(
      async (m) => {
        const what = m.string();
        if (what === "a.1" && !failed) {
          failed = true;
          throw new Error("a.1 fails once");
        }
        handled.push(what);
        m.ack();
      },
      { keyOf: (m: JsMsg) => m.subject, retryMs: 200 },
    );
    await waitFor("5 handled", () => handled.length >= 5, { timeoutMs: 10_000 });
    await sleep(500);
    expect(handled.filter((h) => h.startsWith("a."))).toEqual(["a.1", "a.2", "a.3"]);
    expect(handled.filter((h) => h.startsWith("b."))).toEqual(["b.1", "b.2"]); // another key is not held
    expect(handled.length).toBe(5);
  });
});

describe("the kit's pull() acks, sent together at the end of a turn of the event loop", () => {
  // The ack is held back, so the message's other answers must be too: the first answer counts.
  it.each([
    ["naks it", (m: JsMsg) => m.nak()],
    ["terms it", (m: JsMsg) => m.term()],
    [
      "throws (the kit would nak it)",
      () => {
        throw new Error("after its ack");
      },
    ],
  ])("keeps an ack when the handler then %s: none comes again", async (_, after) => {
    for (let i = 0; i < 5; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    const runs: number[] = [];
    await start(async (m) => {
      runs.push(m.seq);
      m.ack();
      after(m);
    }, {});
    await waitFor("5 handled", () => runs.length >= 5, { timeoutMs: 5_000 });
    await sleep(1_500); // past the 1 s ack_wait and the 1 s nak delay: a lost ack would show now
    expect(runs).toEqual([1, 2, 3, 4, 5]);
    expect((await e2e.jsm.consumers.info("PULLED", "c")).num_ack_pending).toBe(0);
  });

  it("sends every ack given before stop() and the connection's close: none comes again, none is lost", async () => {
    const own = await connect({ servers: e2e.server.url });
    for (let i = 0; i < 300; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    const first = new Set<number>();
    const serving = await pull(
      await jetstream(own).consumers.get("PULLED", "c"),
      async (m) => {
        first.add(m.seq);
        m.ack();
      },
      { nc: own, log, who: { test: "stop" }, batch: 64 },
    );
    await waitFor("some handled", () => first.size >= 100, { timeoutMs: 5_000 });
    await serving.stop();
    await own.close();
    // The rest (handed back, to come again after the pull's 2 s expiry) go to the next instance; a
    // lost ack would bring one of the first's back to it after the 1 s ack_wait.
    const next: number[] = [];
    await start(async (m) => {
      next.push(m.seq);
      m.ack();
    }, {});
    await waitFor("all 300 handled", () => first.size + next.length >= 300, { timeoutMs: 15_000 });
    await sleep(1_500);
    expect(next.filter((seq) => first.has(seq))).toEqual([]);
    expect([...first, ...next].sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
  });
});

describe("the kit's pull() and a message that can never succeed, or must wait for its key", () => {
  it("ends a malformed message with its reason (term; the reason from 2.10.4), holds nothing behind it, and goes on", async () => {
    await e2e.jsm.consumers.add("PULLED", { durable_name: "slow", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000) });
    for (const s of ["bad", "a.2"]) await jetstream(e2e.nc).publish("pulled.a", s);
    const advisories = e2e.nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.PULLED.slow");
    const handled: { what: string; delivery: number }[] = [];
    const consumer = await jetstream(e2e.nc).consumers.get("PULLED", "slow");
    running.push(
      await pull(
        consumer,
        async (m) => {
          handled.push({ what: m.string(), delivery: m.info.deliveryCount });
          if (m.string() === "bad") throw new MalformedPayload("not an order");
          m.ack();
        },
        { nc: e2e.nc, log, who: { test: "malformed" }, keyOf: (m) => m.subject, retryMs: 200 },
      ),
    );
    const advisory = await (async () => {
      for await (const m of advisories) return m.json<{ stream_seq: number; reason?: string }>();
      throw new Error("no advisory");
    })();
    advisories.unsubscribe();
    expect(advisory.stream_seq).toBe(1);
    if (versionAtLeast(e2e.version, "2.10.4")) expect(advisory.reason).toBe("malformed: not an order");
    await waitFor("a.2 handled", () => handled.length >= 2, { timeoutMs: 5_000 });
    await sleep(500);
    expect(handled).toEqual([
      { what: "bad", delivery: 1 },
      { what: "a.2", delivery: 1 }, // not held behind the malformed one of its key
    ]);
    expect((await e2e.jsm.consumers.info("PULLED", "slow")).num_ack_pending).toBe(0);
  });

  it("hands a message held behind its key back with the retry delay, not its ack_wait: all handled in seconds", async () => {
    await e2e.jsm.consumers.add("PULLED", { durable_name: "slow", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000) });
    for (const s of ["a.1", "a.2", "a.3"]) await jetstream(e2e.nc).publish("pulled.a", s);
    const handled: string[] = [];
    let failed = false;
    const consumer = await jetstream(e2e.nc).consumers.get("PULLED", "slow");
    running.push(
      await pull(
        consumer,
        async (m) => {
          if (m.string() === "a.1" && !failed) {
            failed = true;
            throw new Error("a.1 fails once");
          }
          handled.push(m.string());
          m.ack();
        },
        { nc: e2e.nc, log, who: { test: "held" }, keyOf: (m) => m.subject, retryMs: 200 },
      ),
    );
    await waitFor("3 handled", () => handled.length >= 3, { timeoutMs: 10_000, detail: () => handled });
    expect(handled).toEqual(["a.1", "a.2", "a.3"]);
  });
});

describe("the kit's pull() hands the handler the message as nats.js gave it", () => {
  it("the same subject, data, headers, sequence, delivery info and times as stored; ackAck true once, false after an ack", async () => {
    const h = headers();
    h.set("Order", "o-1");
    await jetstream(e2e.nc).publish("pulled.seen", JSON.stringify({ n: 1 }), { headers: h });
    await jetstream(e2e.nc).publish("pulled.seen", "second");
    const stored = (await e2e.jsm.streams.getMessage("PULLED", { seq: 1 }))!;
    const seen: Record<string, unknown>[] = [];
    await start(async (m) => {
      if (m.seq === 1) {
        seen.push({
          subject: m.subject,
          data: new TextDecoder().decode(m.data),
          string: m.string(),
          json: m.json(),
          order: m.headers?.get("Order"),
          seq: m.seq,
          stream: m.info.stream,
          redelivered: m.redelivered,
          sid: typeof m.sid === "number" && m.sid > 0,
          time: m.time.getTime(),
          timestamp: m.timestamp,
          nanos: typeof m.timestampNanos === "bigint" && m.timestampNanos > 0n,
          ackAck: await m.ackAck(), // confirmed by the server
        });
        return;
      }
      m.ack(); // sent at the end of this turn: an ackAck now is a second answer, and the first counts
      seen.push({ seq: m.seq, ackAck: await m.ackAck() });
    }, {});
    await waitFor("both handled", () => seen.length >= 2, { timeoutMs: 5_000 });
    expect(seen).toEqual([
      {
        subject: "pulled.seen",
        data: '{"n":1}',
        string: '{"n":1}',
        json: { n: 1 },
        order: "o-1",
        seq: 1,
        stream: "PULLED",
        redelivered: false,
        sid: true,
        time: stored.time.getTime(),
        timestamp: stored.time.toISOString(),
        nanos: true,
        ackAck: true,
      },
      { seq: 2, ackAck: false },
    ]);
    await sleep(1_500); // past the 1 s ack_wait: both stay acked, neither comes again
    const info = await e2e.jsm.consumers.info("PULLED", "c");
    expect([info.num_ack_pending, info.num_redelivered, info.delivered.consumer_seq]).toEqual([0, 0, 2]);
  });
});

describe("the kit's pull() keyOf, when the failed message is handled before those held behind it", () => {
  it("still hands a newer message of the key back until the held ones are handled", async () => {
    for (const s of ["a.1", "b.1", "a.2", "a.3"]) await jetstream(e2e.nc).publish(`pulled.${s.split(".")[0]}`, s);
    const handled: string[] = [];
    let failed = false;
    await start(
      async (m) => {
        const what = m.string();
        if (what === "a.1" && !failed) {
          failed = true;
          throw new Error("a.1 fails once"); // back in 200 ms, before a.2 and a.3 (held while b.1 runs)
        }
        if (what === "b.1") await sleep(300);
        if (what === "a.1") await jetstream(e2e.nc).publish("pulled.a", "a.4"); // arrives before a.2 and a.3 come back
        handled.push(what);
        m.ack();
      },
      { keyOf: (m: JsMsg) => m.subject, retryMs: 200 },
    );
    await waitFor("5 handled", () => handled.length >= 5, { timeoutMs: 10_000 });
    await sleep(500);
    expect(handled.filter((h) => h.startsWith("a."))).toEqual(["a.1", "a.2", "a.3", "a.4"]);
  });
});

describe("the kit's pull() keyOf, when the failed message never comes back to this instance", () => {
  it("lets the hold lapse after ack_wait plus twice the delay, then handles the key's later messages", async () => {
    for (const s of ["a.1", "a.2", "a.3"]) await jetstream(e2e.nc).publish("pulled.a", s);
    const handled: string[] = [];
    let failedAt = 0;
    await start(
      async (m) => {
        const what = m.string();
        if (what === "a.1") {
          // Ends for good and fails: as an ackAck() whose ack landed but whose answer was lost, or a
          // message another instance took meanwhile. The hold it leaves cannot end by a.1 being
          // handled here. (A plain ack() before a throw holds nothing: the kit knows it was given.)
          m.term();
          failedAt = Date.now();
          throw new Error("a.1's ack answer lost");
        }
        handled.push(what);
        m.ack();
      },
      { keyOf: (m: JsMsg) => m.subject, retryMs: 200 },
    );
    // a.2 and a.3 come back every 200 ms while held: that must not keep the hold alive.
    await waitFor("a.2 and a.3 handled", () => handled.length >= 2, { timeoutMs: 10_000, detail: () => handled });
    expect(handled).toEqual(["a.2", "a.3"]);
    expect(Date.now() - failedAt).toBeGreaterThanOrEqual(1_000 + 2 * 200 - 50); // not before the hold lapsed
  });
});

describe("the kit's pull() stopped while messages are on their way to it", () => {
  it("hands every one back: all go to the next instance at once, none waits out its ack_wait", async () => {
    // ack_wait 30 s, as a deployed consumer: a message the server sent to a pull nobody reads any more
    // stays ack-pending that long.
    await e2e.jsm.consumers.add("PULLED", { durable_name: "slow", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000) });
    const consumer = await jetstream(e2e.nc).consumers.get("PULLED", "slow");
    for (let i = 0; i < 100; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    // The first instance hands every message straight back, so deliveries stream to it without pause
    // and some are on the wire when it stops.
    let bounced = 0;
    const first = await pull(
      consumer,
      async (m) => {
        bounced++;
        m.nak();
      },
      { nc: e2e.nc, log, who: { test: "first" }, batch: 8 },
    );
    await waitFor("deliveries streaming", () => bounced >= 200, { timeoutMs: 10_000 });
    await first.stop();
    const handled = new Set<number>();
    const next = async (m: JsMsg) => {
      handled.add(m.seq);
      m.ack();
    };
    running.push(await pull(consumer, next, { nc: e2e.nc, log, who: { test: "next" }, batch: 8 }));
    await waitFor("all 100 handled by the next instance", () => handled.size >= 100, {
      timeoutMs: 10_000,
      detail: async () => ({ handled: handled.size, ack_pending: (await e2e.jsm.consumers.info("PULLED", "slow")).num_ack_pending }),
    });
    expect(handled.size).toBe(100);
  });
});

describe("the kit's pull() stopped with messages in hand and its pull still open", () => {
  // Four messages and a batch of 8: the pull under way stays open (2 s) for four more. A message
  // handed back at once would come straight back to it, be handed back again, and with max_deliver 2
  // never reach the next instance. Seq 1 is in the handler when stop() comes; it then succeeds, or
  // fails (its retry must not come back to that pull either).
  it.each([
    ["succeeds", [2, 3, 4]],
    ["fails", [1, 2, 3, 4]],
  ])("hands them back past the open pull's end when the handler in progress %s (max_deliver 2)", async (outcome, expected) => {
    await e2e.jsm.consumers.add("PULLED", { durable_name: "two", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000), max_deliver: 2 });
    const consumer = await jetstream(e2e.nc).consumers.get("PULLED", "two");
    for (let i = 0; i < 4; i++) await jetstream(e2e.nc).publish("pulled.x", String(i));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let got = 0;
    const first = await pull(
      consumer,
      async (m) => {
        got++;
        if (m.seq === 1) {
          await gate; // three more wait in hand behind it
          if (outcome === "fails") throw new Error("failed while stopping");
        }
        m.ack();
      },
      { nc: e2e.nc, log, who: { test: "first" }, batch: 8 },
    );
    await waitFor("the first message in the handler", () => got >= 1, { timeoutMs: 5_000 });
    const stopping = first.stop();
    release();
    await stopping;
    const handled = new Set<number>();
    running.push(
      await pull(
        consumer,
        async (m) => {
          handled.add(m.seq);
          m.ack();
        },
        { nc: e2e.nc, log, who: { test: "next" }, batch: 8 },
      ),
    );
    await waitFor(`seqs ${expected.join(",")} handled by the next instance`, () => handled.size >= expected.length, {
      timeoutMs: 10_000,
      detail: async () => ({ handled: [...handled], ack_pending: (await e2e.jsm.consumers.info("PULLED", "two")).num_ack_pending }),
    });
    expect([...handled].sort()).toEqual(expected);
  });
});

describe("the kit's pull() given options the client refuses", () => {
  it("stops at once with the reason in `stopped`, rather than pulling again for ever", async () => {
    await start(async () => {}, { expiresMs: 500 }); // nats.js wants at least 1 s
    const serving = running.at(-1)!;
    await waitFor("the loop stopped by itself", () => serving.stopped !== undefined, { timeoutMs: 5_000 });
    expect(serving.stopped).toMatch(/expires.*at least 1000ms/);
  });
});
