// Fanout under generated fault schedules: order events (created, paid, shipped) published in the
// background to the Interest stream, malformed events among them, two subscriber processes on their
// own durable consumers (billing, shipping), and the rig's faults (rig.ts). The model:
//   every consumer gets every stored event; the Interest stream is empty at the end (every consumer
//   acked, or ended the malformed ones); with no fault, no event is handled for the first time before
//   an earlier one of its order. After a fault an earlier event that was in flight comes back only
//   after ack_wait, and a later one of its order may go first: counted ("overtaken"), as the README
//   says. Redeliveries of an event handled before are counted, allowed.
import { jetstreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { type OrderEvent, orderEvents } from "@patterns/fanout/producer";
import { addConsumer, setupStreams, streams } from "@patterns/fanout/setup";
import { sleep } from "@repo/harness";
import { publishBatch } from "@repo/kit";
import fc from "fast-check";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step = { op: "publish"; orders: number; malformed: number } | Fault;

const CONSUMERS = ["billing", "shipping"];
const SETTLE_MS = 30_000;
const { name: STREAM, prefix } = streams.interest;

const publish = fc.record({
  op: fc.constant("publish" as const),
  orders: fc.integer({ min: 1, max: 40 }),
  malformed: fc.integer({ min: 0, max: 2 }),
});
const step: fc.Arbitrary<Step> = fc.oneof({ weight: 3, arbitrary: publish }, ...faultSteps(CONSUMERS.length, 1_000));
const enc = new TextEncoder();

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const got = new Map<string, { order: string; n: number }[]>(CONSUMERS.map((c) => [c, []]));
  const rig = await startRig(pool, {
    role: "fanout-subscriber",
    workers: CONSUMERS.length,
    options: (i) => ({ retention: "interest", consumer: CONSUMERS[i] }),
    setup: async (nc) => {
      const jsm = await jetstreamManager(nc);
      await setupStreams(jsm);
      for (const c of CONSUMERS) {
        await addConsumer(jsm, "interest", c);
        // A subscriber that goes silent (killed, paused) has its events again after 1 s, not 30.
        await jsm.consumers.update(STREAM, c, { ack_wait: nanos(1_000) });
      }
    },
    onLine: (l: Line) => {
      if (typeof l.consumer === "string" && typeof l.order === "string") got.get(l.consumer)?.push({ order: l.order, n: l.n as number });
    },
  });
  try {
    const jsm = await jetstreamManager(rig.nc);
    const published = new Map<number, OrderEvent>(); // stored, by event number
    const unsure = new Set<number>();
    const pending: Promise<unknown>[] = [];
    let orders = 0;
    let n = 0;
    for (const s of steps) {
      if (isFault(s)) {
        await rig.apply(s);
        continue;
      }
      const events = orderEvents(s.orders, `o${orders}`).map((e) => ({ ...e, n: n + e.n }));
      orders += s.orders;
      n += events.length;
      const msgs = [
        ...events.map((e) => ({ subject: `${prefix}.${e.orderId}.${e.type}`, id: `e${e.n}`, data: enc.encode(JSON.stringify(e)) })),
        ...Array.from({ length: s.malformed }, (_, i) => ({
          subject: `${prefix}.junk.created`,
          id: `junk-${n}-${i}`,
          data: enc.encode("{oops"),
        })),
      ];
      pending.push(
        publishBatch(rig.nc, msgs, { stream: STREAM, window: 64, what: "event(s)" }, (r, i) => {
          const e = events[i];
          if (e && !r.error) published.set(e.n, e);
          else if (e) unsure.add(e.n);
        }).catch(() => undefined), // each event's answer is recorded above
      );
    }
    await Promise.all(pending);
    const settled = await settle(SETTLE_MS, async () => (await jsm.streams.info(STREAM)).state.messages === 0);
    await sleep(200);

    const violations: string[] = [];
    const left = (await jsm.streams.info(STREAM)).state.messages;
    if (!settled) violations.push(`${left} event(s) still in ${STREAM} ${SETTLE_MS / 1000}s after the last step`);
    let repeats = 0;
    let overtaken = 0;
    const faulted = steps.some((s) => isFault(s) && s.op !== "wait");
    for (const [consumer, lines] of got) {
      const seen = new Set<number>();
      const lastOf = new Map<string, number>(); // order -> highest event number handled so far
      for (const { order, n: k } of lines) {
        if (seen.has(k)) {
          repeats++;
          continue;
        }
        seen.add(k);
        if ((lastOf.get(order) ?? -1) > k) {
          overtaken++;
          if (!faulted)
            violations.push(`${consumer}: event ${k} of ${order} handled first after a later one (${lastOf.get(order)}), with no fault`);
        }
        lastOf.set(order, Math.max(lastOf.get(order) ?? -1, k));
      }
      const missed = [...published.keys()].filter((k) => !seen.has(k));
      if (missed.length) violations.push(`${consumer}: ${missed.length} stored event(s) never handled, e.g. ${missed[0]}`);
    }
    return {
      violations,
      counts: {
        published: published.size,
        unsure: unsure.size,
        ...Object.fromEntries([...got].map(([c, l]) => [c, new Set(l.map((x) => x.n)).size])),
        repeats,
        overtaken,
      },
      faults: rig.faults,
    };
  } finally {
    await rig.close();
  }
}

export const fanout: Scenario<Step> = {
  name: "fanout",
  model: "every consumer gets every stored event, the Interest stream emptied; each order in order unless a fault (counted)",
  steps: schedule(publish, step),
  run,
};
