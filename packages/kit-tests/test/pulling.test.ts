// The kit's startPulling: the count of jobs asked for (and so the worker's free slots) follows the
// pulls the server holds, across a server restart too. And pullIntoSlots on it: never more in hand
// than its slots, each kept alive past ack_wait, and at a stop deadline only what is held handed back.
import { AckPolicy, jetstream } from "@nats-io/jetstream";
import { headers, nanos } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { type Delivery, type Hand, pullIntoSlots, type SlotsOptions, startPulling, versionAtLeast } from "@repo/kit";
import { beforeAll, describe, expect, it } from "vitest";

const e2e = serverForTests({ reconnect: true });

beforeAll(async () => {
  await e2e.jsm.streams.add({ name: "ASKED", subjects: ["asked.>"] });
  await e2e.jsm.consumers.add("ASKED", { durable_name: "c", ack_policy: AckPolicy.Explicit });
});

describe(`the kit's startPulling on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("forgets the pulls a restarted server lost, though later pulls keep answering", async () => {
    const puller = startPulling(e2e.nc, { stream: "ASKED", consumer: "c", expiresMs: 1_000, onJob: () => {}, onChange: () => {} });
    try {
      puller.ask(4); // waiting at the server when it restarts: never answered
      await sleep(200);
      await e2e.server.kill();
      await e2e.server.restart();
      await e2e.reconnected();
      await sleep(500);
      // A worker asks on while its slots seem taken: each pull expires after 1 s with a 408 (a sign of
      // life), which must not keep the lost 4 counted.
      for (let i = 0; i < 4; i++) {
        puller.ask(4);
        await sleep(1_300);
      }
      expect(puller.asked).toBe(0);
    } finally {
      await puller.close();
    }
  });
});

describe("a Delivery's answers (the work queue's own acks, on its long-lived inbox)", () => {
  /** Each delivery of ANSWERS's consumer `c` to `onJob`, through a startPulling asking one at a time. */
  const deliveries = (onJob: (d: Delivery) => void) => {
    const puller = startPulling(e2e.nc, {
      stream: "ANSWERS",
      consumer: "c",
      expiresMs: 1_000,
      onJob: (d) => {
        onJob(d);
        puller.ask(1);
      },
      onChange: () => {
        if (puller.asked === 0) puller.ask(1);
      },
    });
    puller.ask(1);
    return puller;
  };
  const fresh = async (...bodies: string[]) => {
    await e2e.jsm.streams.delete("ANSWERS").catch(() => {});
    await e2e.jsm.streams.add({ name: "ANSWERS", subjects: ["answers.>"] });
    await e2e.jsm.consumers.add("ANSWERS", { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000) });
    const h = headers();
    h.set("Job", "j-1");
    for (const b of bodies) await jetstream(e2e.nc).publish("answers.x", b, { headers: h });
  };

  it("nak(delay) brings it back after the delay, a plain nak() at once; the first answer is the one that counts", async (ctx) => {
    // nats-server 2.9.10, in 2 of 4 runs here: the message nak'd with a delay did not come back within
    // 4 s, and the other one came again as a first delivery. Not the kit's to fix; noted, not tested.
    if (!versionAtLeast(e2e.version, "2.10.0")) return ctx.skip("a nak with a delay on 2.9.10: see above");
    await fresh("a", "b");
    const seen: { seq: number; delivery: number; at: number; subject: string; data: string; job?: string }[] = [];
    const puller = deliveries((d) => {
      seen.push({
        seq: d.seq,
        delivery: d.deliveryCount,
        at: Date.now(),
        subject: d.subject,
        data: new TextDecoder().decode(d.data),
        job: d.headers?.get("Job"),
      });
      if (d.deliveryCount > 1) return d.ack();
      if (d.seq === 1) d.nak(1_000);
      else d.nak();
      d.ack(); // a second answer: not sent
      d.working();
    });
    try {
      await waitFor("both back", () => seen.length >= 4, { timeoutMs: 5_000, detail: () => seen });
      await sleep(300);
    } finally {
      await puller.close();
    }
    const of = (seq: number) => seen.filter((x) => x.seq === seq);
    expect(of(1).map((x) => x.delivery)).toEqual([1, 2]);
    expect(of(2).map((x) => x.delivery)).toEqual([1, 2]);
    expect(of(1)[1]!.at - of(1)[0]!.at).toBeGreaterThanOrEqual(950);
    expect(of(2)[1]!.at - of(2)[0]!.at).toBeLessThan(900);
    expect(seen[0]).toMatchObject({ subject: "answers.x", data: "a", job: "j-1" });
    expect((await e2e.jsm.consumers.info("ANSWERS", "c")).num_ack_pending).toBe(0);
  });

  it("term(reason) ends it for good, the reason in the server's advisory (2.10.4+); ackAck() is confirmed once, false after an answer", async () => {
    await fresh("a", "b");
    const advisories = e2e.nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ANSWERS.c");
    const acked: boolean[] = [];
    const seen: number[] = [];
    const puller = deliveries(async (d) => {
      seen.push(d.seq);
      if (d.seq === 1) {
        // Older servers take only a bare +TERM (serve.ts terminate() sends that); with a reason they ignore it.
        if (versionAtLeast(e2e.version, "2.10.4")) d.term("bad job");
        else d.term();
        acked.push(await d.ackAck());
      } else {
        acked.push(await d.ackAck(), await d.ackAck());
      }
    });
    try {
      await waitFor("both answered", () => acked.length >= 3, { timeoutMs: 5_000 });
      const advisory = await (async () => {
        for await (const m of advisories) return m.json<{ stream_seq: number; reason?: string }>();
        throw new Error("no advisory");
      })();
      expect(advisory.stream_seq).toBe(1);
      if (versionAtLeast(e2e.version, "2.10.4")) expect(advisory.reason).toBe("bad job");
      await sleep(300);
    } finally {
      advisories.unsubscribe();
      await puller.close();
    }
    expect(acked).toEqual([false, true, false]);
    expect(seen).toEqual([1, 2]);
    expect((await e2e.jsm.consumers.info("ANSWERS", "c")).num_ack_pending).toBe(0);
  });
});

describe(`the kit's pullIntoSlots on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  // A beat every 300 ms: well inside the shortest ack_wait below (1 s).
  const slots = (handle: SlotsOptions["handle"], concurrency: number) =>
    pullIntoSlots(e2e.nc, {
      stream: "SLOTS",
      consumer: "c",
      concurrency,
      beatEveryMs: 300,
      handle,
      log: e2e.log,
      who: { test: "slots" },
      refused: () => undefined,
    });
  const fresh = async (ackWaitMs: number, n: number) => {
    await e2e.jsm.streams.delete("SLOTS").catch(() => {});
    await e2e.jsm.streams.add({ name: "SLOTS", subjects: ["slots.>"] });
    await e2e.jsm.consumers.add("SLOTS", { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: nanos(ackWaitMs) });
    for (let i = 0; i < n; i++) await jetstream(e2e.nc).publish("slots.x", String(i));
  };

  it("holds at most its slots and keeps each alive: 12 handlers of 1.5 s past a 1 s ack_wait, 4 at once, each once", async () => {
    await fresh(1_000, 12);
    const handled: number[] = [];
    let now = 0;
    let most = 0;
    const s = slots(async (m, hand) => {
      now++;
      most = Math.max(most, now);
      await hand.holding(() => sleep(1_500));
      now--;
      handled.push(m.seq);
      m.ack();
    }, 4);
    try {
      await waitFor("12 handled", () => handled.length === 12, { timeoutMs: 20_000 });
    } finally {
      await s.stop();
    }
    expect(most).toBe(4);
    expect(handled.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const ci = await e2e.jsm.consumers.info("SLOTS", "c");
    expect({ redelivered: ci.num_redelivered, pending: ci.num_ack_pending }).toEqual({ redelivered: 0, pending: 0 });
  });

  it("hands back at its stop deadline only what a handler holds: another takes it at once, its end decided stays", async () => {
    await fresh(30_000, 2); // an ack_wait far past the test: what comes back came back by the nak
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    const held = new Set<number>();
    const first = slots(async (m: Delivery, hand: Hand) => {
      held.add(m.seq);
      // seq 1: its handler holds it; seq 2: its end is decided (say, a dead letter on its way).
      if (m.seq === 1) await hand.holding(() => released);
      else await released;
      m.ack();
    }, 2);
    await waitFor("both in hand", () => held.size === 2);
    await first.stop(300);
    const second: { seq: number; delivery: number }[] = [];
    const other = slots(async (m) => {
      second.push({ seq: m.seq, delivery: m.deliveryCount });
      m.ack();
    }, 2);
    try {
      await waitFor("the held one taken by the other", () => second.length === 1, { timeoutMs: 5_000 });
      release();
      await sleep(1_500);
      expect(second).toEqual([{ seq: 1, delivery: 2 }]);
      expect((await e2e.jsm.streams.info("SLOTS")).state.messages).toBe(2); // limits retention: acks keep them
      expect((await e2e.jsm.consumers.info("SLOTS", "c")).num_ack_pending).toBe(0);
    } finally {
      release();
      await other.stop();
    }
  });
});
