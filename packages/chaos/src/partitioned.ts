// Per-key order under generated fault schedules: each key's events published one after another in
// the background (a key's next publish waits for the one before it, as the pattern's producer does),
// resends of events already stored (the same msg id), malformed events, three worker processes sharing
// four partitions by leases, and the rig's faults (rig.ts), a pause outlasting both the lease and
// ack_wait. The model, read from the workers' lines and from every key's state at the end:
//   every key's state holds exactly the events stored for it, each folded once (its total is the sum of
//   1..seq); no event is applied twice; no event is ended as out of order (each key's events were
//   stored in order, so none may come before an earlier one); each worker process runs a key's work
//   in ascending order; the stream is empty at the end (every event handled, the malformed ones
//   ended). Events handled again and refused by the state ("already") are counted, allowed.
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { PREFIX, STATE, STREAM, setup, type Timings } from "@patterns/partitioned/setup";
import { allStates } from "@patterns/partitioned/state";
import { sleep } from "@repo/harness";
import { createPublisher } from "@repo/kit";
import fc from "fast-check";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step = { op: "publish"; keys: number[]; events: number; malformed: number } | { op: "resend"; keys: number[] } | Fault;

const WORKERS = 3;
const PARTITIONS = 4;
const KEYS = 10;
// Short, so a schedule takes seconds: a dead worker's partitions move after 1.2 s, its event in hand
// comes back after 1 s.
const TIMINGS: Timings = { leaseMs: 1_200, ackWaitMs: 1_000 };
/** How long every event has to be applied after the last step. */
const SETTLE_MS = 45_000;

const keys = fc.uniqueArray(fc.integer({ min: 0, max: KEYS - 1 }), { minLength: 1, maxLength: 5 });
const publish = fc.record({
  op: fc.constant("publish" as const),
  keys,
  events: fc.integer({ min: 1, max: 12 }),
  malformed: fc.integer({ min: 0, max: 1 }),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: publish },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("resend" as const), keys }) },
  ...faultSteps(WORKERS, Math.max(TIMINGS.leaseMs, TIMINGS.ackWaitMs)),
);
const enc = new TextEncoder();

/** A key's event as the producer writes it: amount = seq, so a key's total is 1 + 2 + … + seq. */
const event = (key: string, seq: number) => ({ key, seq, type: "item-added", amount: seq });
const totalUpTo = (seq: number) => (seq * (seq + 1)) / 2;
// Not JSON; no seq; a key other than its subject's (it would land in another key's partition).
const MALFORMED = ["{oops", JSON.stringify({ key: "k0", type: "x", amount: 1 }), JSON.stringify(event("elsewhere", 1))];
const workRuns = (work: Map<string, Map<string, number[]>>) =>
  [...work.values()].reduce((n, byKey) => n + [...byKey.values()].reduce((m, s) => m + s.length, 0), 0);

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const applied = new Map<string, number>(); // key/seq -> times a worker printed "applied"
  const work = new Map<string, Map<string, number[]>>(); // worker process -> key -> seqs its work ran for, in order
  let already = 0;
  const gaps: string[] = [];
  const rig = await startRig(pool, {
    role: "partitioned-worker",
    workers: WORKERS,
    options: () => ({ partitions: PARTITIONS, timings: TIMINGS }),
    setup: async (nc) => {
      await setup(await jetstreamManager(nc), nc, PARTITIONS, TIMINGS);
    },
    onLine: (l: Line) => {
      const at = `${l.key}/${l.seq}`;
      if (typeof l.work === "string") {
        const byKey = work.get(l.work) ?? new Map<string, number[]>();
        work.set(l.work, byKey);
        byKey.set(l.key as string, [...(byKey.get(l.key as string) ?? []), l.seq as number]);
      } else if (l.result === "applied") applied.set(at, (applied.get(at) ?? 0) + 1);
      else if (l.result === "already") already++;
      else if (l.result === "gap") gaps.push(at);
    },
  });
  const publisher = createPublisher(rig.nc, { stream: STREAM });
  try {
    const jsm = await jetstreamManager(rig.nc);
    // Per key: the events the schedule wants, the highest seq known stored (1..stored all are), and
    // the chain its publishes go through one after another.
    const planned = new Map<string, number>();
    const stored = new Map<string, number>();
    const chains = new Map<string, Promise<void>>();
    let resent = 0;
    let malformed = 0;
    const put = (key: string, seq: number) =>
      publisher.publish({ subject: `${PREFIX}.${key}`, id: `${key}-${seq}`, data: enc.encode(JSON.stringify(event(key, seq))) });
    // Publishes the key's events not yet stored, in order, each after the one before is stored; an
    // error stops it there (the next publish of the key, or the end's catch-up, starts from it again).
    const catchUp = async (key: string) => {
      for (let seq = (stored.get(key) ?? 0) + 1; seq <= (planned.get(key) ?? 0); seq++) {
        if ((await put(key, seq)).error) return;
        stored.set(key, seq);
      }
    };
    const then = (key: string, f: () => Promise<void>) => chains.set(key, (chains.get(key) ?? Promise.resolve()).then(f));
    let junk = 0;
    for (const s of steps) {
      if (isFault(s)) {
        await rig.apply(s);
        continue;
      }
      for (const k of s.keys) {
        const key = `k${k}`;
        if (s.op === "resend") {
          // A producer that resends after a timeout: the stored copy stands, nothing new is stored.
          then(key, async () => {
            const last = stored.get(key) ?? 0;
            if (last > 0 && !(await put(key, last)).error) resent++;
          });
          continue;
        }
        planned.set(key, (planned.get(key) ?? 0) + s.events);
        then(key, () => catchUp(key));
      }
      if (s.op === "publish")
        for (let i = 0; i < s.malformed; i++) {
          const key = `k${s.keys[0]}`;
          then(key, async () => {
            const n = junk++;
            const r = await publisher.publish({
              subject: `${PREFIX}.${key}`,
              id: `junk-${n}`,
              data: enc.encode(MALFORMED[n % MALFORMED.length]!),
            });
            if (!r.error) malformed++;
          });
        }
    }
    await Promise.all(chains.values());
    // What a restart or a pause left unpublished goes now (bounded), so every key's events are stored.
    const behind = () => [...planned].filter(([key, n]) => (stored.get(key) ?? 0) < n).map(([key]) => key);
    for (const end = Date.now() + 30_000; behind().length > 0 && Date.now() < end; await sleep(250))
      await Promise.all(behind().map(catchUp));
    // Not the pattern's failure: the run's own (the server never came back), said as such.
    if (behind().length > 0) throw new Error(`could not publish every event in 30 s after the last step: ${behind().join(", ")} behind`);

    const states = new Kvm(rig.nc).open(STATE);
    const complete = async () => {
      const all = await allStates(await states);
      return [...stored].every(([key, n]) => all.get(key)?.seq === n);
    };
    const settled = await settle(SETTLE_MS, async () => (await complete()) && (await jsm.streams.info(STREAM)).state.messages === 0);
    await sleep(300); // the workers' last lines

    const violations: string[] = [];
    const left = (await jsm.streams.info(STREAM)).state.messages;
    if (!settled) violations.push(`not settled ${SETTLE_MS / 1000}s after the last step (${left} event(s) left in ${STREAM})`);
    const all = await allStates(await states);
    for (const key of planned.keys()) {
      const s = all.get(key);
      const want = stored.get(key) ?? 0;
      if ((s?.seq ?? 0) !== want) violations.push(`${key}: state at seq ${s?.seq ?? 0}, ${want} stored`);
      else if ((s?.total ?? 0) !== totalUpTo(want))
        violations.push(`${key}: total ${s?.total}, not ${totalUpTo(want)}: an event folded twice or skipped`);
    }
    for (const [at, times] of applied) if (times > 1) violations.push(`${at}: applied ${times} times`);
    for (const at of gaps) violations.push(`${at}: ended as out of order`);
    // Every event applied had its work run first (each work line is written before the compare-and-set).
    const worked = new Set([...work.values()].flatMap((byKey) => [...byKey].flatMap(([k, seqs]) => seqs.map((q) => `${k}/${q}`))));
    for (const [key, n] of stored)
      for (let seq = 1; seq <= n; seq++)
        if (!worked.has(`${key}/${seq}`)) violations.push(`${key}/${seq}: applied, but its work never ran`);
    for (const [w, byKey] of work)
      for (const [key, seqs] of byKey)
        if (seqs.some((seq, i) => i > 0 && seq < seqs[i - 1]!)) violations.push(`${w}: ran ${key}'s work out of order: ${seqs.join(",")}`);
    return {
      violations,
      counts: {
        stored: [...stored.values()].reduce((a, b) => a + b, 0),
        applied: applied.size,
        already,
        resent,
        malformed,
        // work run again for an event (a redelivery, a paused worker beside the new holder): at least once
        work_repeats: workRuns(work) - worked.size,
      },
      faults: rig.faults,
    };
  } finally {
    publisher.close();
    await rig.close();
  }
}

export const partitioned: Scenario<Step> = {
  name: "partitioned",
  model:
    "every key's state holds its stored events once each, in order; none applied twice or ended out of order; each worker's work ascending per key",
  steps: schedule(publish, step),
  run,
};
