// Ordered replay under generated fault schedules: events appended in the background (no msg ids:
// the ledger is append-only), a replayer process that follows the ledger and resumes from its saved
// position, and the rig's faults (rig.ts). The model, against the ledger's stored sequences:
//   within each run of the replay, the sequences come strictly in order with no gap; a run resumes at
//   or before the event after the last one seen, at most a checkpoint interval back; and by
//   the end every stored event has been replayed.
import { jetstreamManager } from "@nats-io/jetstream";
import { appendEvents, ledgerEvents } from "@patterns/ordered-replay/producer";
import { STREAM, setup } from "@patterns/ordered-replay/setup";
import { sleep } from "@repo/harness";
import fc from "fast-check";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step = { op: "append"; events: number } | Fault;

const SETTLE_MS = 30_000;
/** The replayer saves its position every this many events: a restart repeats at most that many. */
const CHECKPOINT = 10;

const append = fc.record({ op: fc.constant("append" as const), events: fc.integer({ min: 1, max: 300 }) });
const step: fc.Arbitrary<Step> = fc.oneof({ weight: 3, arbitrary: append }, ...faultSteps(1, 1_000));

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const runs = new Map<string, number[]>(); // run of the replay -> the sequences it handled, in order
  const order: string[] = [];
  const ended: string[] = []; // replays that ended with an error (and were started again): counted
  const rig = await startRig(pool, {
    role: "ordered-replayer",
    workers: 1,
    options: () => ({}),
    setup: async (nc) => void (await setup(await jetstreamManager(nc), nc)),
    onLine: (l: Line) => {
      if (typeof l.ended === "string") ended.push(`run ${l.ended}: ${l.error}`);
      if (typeof l.seq !== "number" || typeof l.run !== "string") return;
      if (!runs.has(l.run)) {
        runs.set(l.run, []);
        order.push(l.run);
      }
      runs.get(l.run)!.push(l.seq);
    },
  });
  try {
    const jsm = await jetstreamManager(rig.nc);
    const pending: Promise<unknown>[] = [];
    let appended = 0;
    for (const s of steps) {
      if (isFault(s)) await rig.apply(s);
      else {
        pending.push(appendEvents(rig.nc, ledgerEvents(s.events, 4, appended), 64).catch(() => undefined));
        appended += s.events;
      }
    }
    await Promise.all(pending);
    const last = async () => (await jsm.streams.info(STREAM)).state.last_seq;
    const seen = () => Math.max(0, ...[...runs.values()].map((r) => r.at(-1) ?? 0));
    const settled = await settle(SETTLE_MS, async () => seen() >= (await last()));
    await sleep(200);

    const violations: string[] = [];
    const stored = await last();
    if (!settled) violations.push(`replayed up to seq ${seen()} of ${stored} within ${SETTLE_MS / 1000}s`);
    const handled = new Set<number>();
    let before = 0; // the last seq of the run before
    let repeats = 0;
    for (const name of order) {
      const seqs = runs.get(name)!;
      const first = seqs[0]!;
      if (first > before + 1) violations.push(`run ${name} resumed at seq ${first}, after ${before}: ${first - before - 1} skipped`);
      // A crash during the save of the Nth event since the last one repeats N events, no more.
      if (before - first + 1 > CHECKPOINT)
        violations.push(`run ${name} resumed at seq ${first}, ${before - first + 1} back (checkpoint every ${CHECKPOINT})`);
      for (let i = 1; i < seqs.length; i++)
        if (seqs[i] !== seqs[i - 1]! + 1) {
          violations.push(`run ${name}: seq ${seqs[i]} after ${seqs[i - 1]}`);
          break;
        }
      for (const seq of seqs) handled.has(seq) ? repeats++ : handled.add(seq);
      before = seqs.at(-1)!;
    }
    const missing = Array.from({ length: stored }, (_, i) => i + 1).filter((s) => !handled.has(s));
    if (settled && missing.length) violations.push(`${missing.length} stored event(s) never replayed, e.g. seq ${missing[0]}`);
    return {
      violations,
      counts: { stored, replayed: handled.size, runs: order.length, repeats, ended_with_error: ended.length },
      faults: rig.faults,
    };
  } finally {
    await rig.close();
  }
}

export const orderedReplay: Scenario<Step> = {
  name: "ordered-replay",
  model: "each run of the replay gap-free and strictly in order, resumed without a skip, every stored event replayed",
  steps: schedule(append, step),
  run,
};
