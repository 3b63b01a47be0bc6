import { spawn } from "node:child_process";
import { jetstream } from "@nats-io/jetstream";
import { freePort, serverForTests, sleep, waitFor } from "@repo/harness";
import type { Serving } from "@repo/kit";
import { beforeEach, describe, expect, it } from "vitest";
import { type Received, startSubscriber } from "../src/consumer.js";
import { type OrderEvent, orderEvents, publishEvents } from "../src/producer.js";
import { addConsumer, CONSUMERS, type Retention, setup, streams } from "../src/setup.js";

const e2e = serverForTests();
const subs: Serving[] = [];

beforeEach(async () => {
  await Promise.all(subs.splice(0).map((s) => s.stop()));
  for (const r of ["limits", "interest"] as const) await e2e.jsm.streams.delete(streams[r].name).catch(() => {});
  await setup(e2e.jsm);
});

function collect() {
  const got: Received[] = [];
  const by = (consumer: string) => got.filter((r) => r.consumer === consumer);
  return { got, by, onEvent: (r: Received) => void got.push(r) };
}

const stored = async (r: Retention) => (await e2e.jsm.streams.info(streams[r].name)).state.messages;

describe(`fanout on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  for (const retention of ["limits", "interest"] as const) {
    it(`delivers every event once to each consumer, in order per subject (${retention} retention)`, async () => {
      const c = collect();
      for (const name of CONSUMERS) {
        // Each consumer at its own pace: analytics is slow, the others are not.
        const handler = name === "analytics" ? async () => void (await sleep(2)) : undefined;
        subs.push(await startSubscriber({ nc: e2e.nc, retention, name, log: e2e.log, onEvent: c.onEvent, handler }));
      }
      const events = orderEvents(40);
      await publishEvents(e2e.nc, events, [retention]);
      await waitFor("every consumer has every event", () => CONSUMERS.every((n) => c.by(n).length >= events.length), { timeoutMs: 30_000 });
      await sleep(200); // a duplicate would show up now
      for (const name of CONSUMERS) {
        const mine = c.by(name);
        expect(mine.length, name).toBe(events.length);
        expect(new Set(mine.map((r) => `${r.event.orderId}-${r.event.type}`)).size, name).toBe(events.length);
        for (const type of ["created", "paid", "shipped"]) {
          const seqs = mine.filter((r) => r.event.type === type).map((r) => r.seq);
          expect(seqs, `${name} ${type}`).toEqual([...seqs].sort((a, b) => a - b));
          expect(new Set(seqs).size).toBe(seqs.length);
        }
        // Overall arrival order is the publish order too (no failures, so no redeliveries).
        expect(mine.map((r) => r.event.n)).toEqual(events.map((e) => e.n));
      }
      await waitFor("acks applied", async () => (await stored(retention)) === (retention === "limits" ? events.length : 0));
    });
  }

  it("lets a late joiner on the Limits stream replay the whole history", async () => {
    const c = collect();
    for (const name of CONSUMERS)
      subs.push(await startSubscriber({ nc: e2e.nc, retention: "limits", name, log: e2e.log, onEvent: c.onEvent }));
    const events = orderEvents(30);
    await publishEvents(e2e.nc, events, ["limits"]);
    await waitFor("the first consumers are done", () => CONSUMERS.every((n) => c.by(n).length === events.length));
    await addConsumer(e2e.jsm, "limits", "audit");
    subs.push(await startSubscriber({ nc: e2e.nc, retention: "limits", name: "audit", log: e2e.log, onEvent: c.onEvent }));
    await waitFor("audit replayed", () => c.by("audit").length === events.length);
    await sleep(200);
    expect(c.by("audit").map((r) => r.event.n)).toEqual(events.map((e) => e.n));
    expect(await stored("limits")).toBe(events.length);
  });

  it("on the Interest stream, removes an event exactly when the last consumer acks it", async () => {
    const js = jetstream(e2e.nc);
    await publishEvents(e2e.nc, orderEvents(1).slice(0, 1), ["interest"]);
    expect(await stored("interest")).toBe(1);
    const left: number[] = [];
    for (const name of CONSUMERS) {
      const m = await (await js.consumers.get(streams.interest.name, name)).next({ expires: 5_000 });
      expect(m, name).not.toBeNull();
      expect(await m!.ackAck()).toBe(true);
      if (name !== CONSUMERS.at(-1)) await sleep(100); // give a premature removal time to show
      left.push(await stored("interest"));
    }
    // Still there after billing and shipping acked; gone once analytics, the last one, acked.
    expect(left.slice(0, -1)).toEqual([1, 1]);
    await waitFor("the event is removed", async () => (await stored("interest")) === 0, { timeoutMs: 2_000 });
  });

  it("keeps a stopped consumer's events on the Interest stream until it comes back", async () => {
    const c = collect();
    const running = new Map<string, Serving>();
    for (const name of CONSUMERS)
      running.set(name, await startSubscriber({ nc: e2e.nc, retention: "interest", name, log: e2e.log, onEvent: c.onEvent }));
    const first = orderEvents(10, "a");
    await publishEvents(e2e.nc, first, ["interest"]);
    await waitFor("all consumers got the first batch", () => CONSUMERS.every((n) => c.by(n).length === first.length));

    await running.get("analytics")!.stop(); // analytics goes down
    const second = orderEvents(10, "b");
    await publishEvents(e2e.nc, second, ["interest"]);
    await waitFor("billing and shipping got the second batch", () =>
      ["billing", "shipping"].every((n) => c.by(n).length === first.length + second.length),
    );
    await sleep(300);
    expect(await stored("interest")).toBe(second.length); // held for analytics only

    subs.push(await startSubscriber({ nc: e2e.nc, retention: "interest", name: "analytics", log: e2e.log, onEvent: c.onEvent }));
    running.delete("analytics");
    subs.push(...running.values());
    await waitFor("analytics caught up", () => c.by("analytics").length === first.length + second.length);
    expect(c.by("analytics").map((r) => r.event.n)).toEqual([...first, ...second].map((e) => e.n));
    await waitFor("the interest stream drained", async () => (await stored("interest")) === 0);
  });

  it("ends a malformed event with a reason and retries a failed one, never stopping: every good event is handled", async () => {
    const c = collect();
    let failedOnce = false;
    const handler = async (e: OrderEvent) => {
      if (e.orderId === "o-1" && !failedOnce) {
        failedOnce = true;
        throw new Error("billing system busy");
      }
    };
    subs.push(await startSubscriber({ nc: e2e.nc, retention: "limits", name: "billing", log: e2e.log, onEvent: c.onEvent, handler }));
    const js = jetstream(e2e.nc);
    await js.publish("limits.orders.created", "{not json");
    await js.publish("limits.orders.created", JSON.stringify({ orderId: 7 }));
    const events = orderEvents(3);
    await publishEvents(e2e.nc, events, ["limits"]);
    await waitFor("every good event handled", () => c.by("billing").length === events.length, { timeoutMs: 15_000 });
    expect(failedOnce).toBe(true);
    expect(new Set(c.by("billing").map((r) => r.event.n))).toEqual(new Set(events.map((e) => e.n)));
    // The two malformed ones were ended, not left to come back: nothing is pending or in flight.
    await waitFor("nothing pending", async () => {
      const ci = await e2e.jsm.consumers.info(streams.limits.name, "billing");
      return ci.num_pending === 0 && ci.num_ack_pending === 0;
    });
  });

  it("never lets a later event of an order overtake one of that order whose handler failed", async () => {
    const c = collect();
    let failedOnce = false;
    const handler = async (e: OrderEvent) => {
      if (e.orderId === "o-1" && e.type === "paid" && !failedOnce) {
        failedOnce = true;
        throw new Error("billing system busy");
      }
    };
    subs.push(await startSubscriber({ nc: e2e.nc, retention: "limits", name: "billing", log: e2e.log, onEvent: c.onEvent, handler }));
    const events = orderEvents(3);
    await publishEvents(e2e.nc, events, ["limits"]);
    await waitFor("every event handled", () => c.by("billing").length === events.length, { timeoutMs: 15_000 });
    expect(failedOnce).toBe(true);
    for (const order of ["o-0", "o-1", "o-2"])
      expect(
        c
          .by("billing")
          .filter((r) => r.event.orderId === order)
          .map((r) => r.event.type),
        order,
      ).toEqual(["created", "paid", "shipped"]);
  });

  it("answers /healthz 200 while it reads its consumer, and 503 with why once the consumer is gone", async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      env: { ...process.env, NATS_URL: e2e.server.url, LOG_FORMAT: "json", SERVICE_NAME: "audit", HEALTH_PORT: String(port) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((r) => child.once("exit", r));
    const health = async () => {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      return { status: r.status, body: (await r.json()) as { ok: boolean; error?: string } };
    };
    try {
      await waitFor("the service is serving", () => output.includes('"msg":"serving"'), { timeoutMs: 20_000, detail: () => output });
      expect(await health()).toMatchObject({ status: 200, body: { ok: true } });
      await e2e.jsm.consumers.delete(streams.limits.name, "audit");
      const down = await health();
      expect(down.status).toBe(503);
      expect(down.body.error).toMatch(/consumer not found/i);
    } finally {
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  });

  it("a deployed service creates only its own consumer: no unread consumer keeps Interest events for ever", async () => {
    for (const r of ["limits", "interest"] as const) await e2e.jsm.streams.delete(streams[r].name);
    const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      env: { ...process.env, NATS_URL: e2e.server.url, LOG_FORMAT: "json", SERVICE_NAME: "billing", RETENTION: "interest" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((r) => child.once("exit", r));
    try {
      await waitFor("the service is serving", () => output.includes('"msg":"serving"'), { timeoutMs: 20_000, detail: () => output });
      const names = async (r: Retention) => (await e2e.jsm.consumers.list(streams[r].name).next()).map((c) => c.name).sort();
      expect(await names("interest")).toEqual(["billing"]);
      expect(await names("limits")).toEqual([]);
    } finally {
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  });
});
