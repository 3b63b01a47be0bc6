// Exactly-once effects under generated fault schedules: publish charge commands (some the bank
// refuses for good), publish some again with the same ids, and the rig's faults (rig.ts). The appliers
// share one bank (a directory with a unique key per charge).
// The model, read at the end (the bank's own log, the ledger stream, the states KV, the commands):
//   each stored charge's bank effect applied once (never twice, by any applier) and its ledger entry
//   stored once, or, refused, neither applied; its state says which; no command is left.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { type Charge, encodeCharge } from "@patterns/exactly-once/producer";
import { COMMANDS, LEDGER, setup } from "@patterns/exactly-once/setup";
import { sleep } from "@repo/harness";
import { publishBatch, storedMessages } from "@repo/kit";
import fc from "fast-check";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step = { op: "publish"; charges: number; refused: number } | { op: "republish"; n: number } | Fault;

const APPLIERS = 2;
const ACK_WAIT_MS = 1_000;
const SETTLE_MS = 45_000;

const publish = fc.record({
  op: fc.constant("publish" as const),
  charges: fc.integer({ min: 1, max: 30 }),
  refused: fc.integer({ min: 0, max: 2 }),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: publish },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("republish" as const), n: fc.integer({ min: 1, max: 10 }) }) },
  ...faultSteps(APPLIERS, ACK_WAIT_MS),
);

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const bankDir = mkdtempSync(join(tmpdir(), "chaos-bank-"));
  const applied = new Map<string, number>(); // the bank's log: each "applied" answer it gave
  let states: KV | undefined;
  const rig = await startRig(pool, {
    role: "exactly-once-applier",
    workers: APPLIERS,
    options: () => ({ bankDir }),
    setup: async (nc) => {
      states = await setup(await jetstreamManager(nc), nc, { ackWaitMs: ACK_WAIT_MS });
    },
    onLine: (l: Line) => {
      if (typeof l.bank_applied === "string") applied.set(l.bank_applied, (applied.get(l.bank_applied) ?? 0) + 1);
    },
  }).catch((err: unknown) => {
    rmSync(bankDir, { recursive: true, force: true });
    throw err;
  });
  try {
    const { nc } = rig;
    const jsm = await jetstreamManager(nc);
    const all: Charge[] = [];
    const stored = new Set<string>();
    const unanswered = new Set<string>();
    const pending: Promise<unknown>[] = [];
    const send = (charges: Charge[]) =>
      pending.push(
        publishBatch(nc, charges.map(encodeCharge), { stream: COMMANDS, window: 64, what: "charge(s)" }, (r, i) => {
          if (r.error) unanswered.add(charges[i]!.id);
          else stored.add(charges[i]!.id);
        }).catch(() => undefined), // each charge's answer is recorded above
      );
    for (const s of steps) {
      if (isFault(s)) await rig.apply(s);
      else if (s.op === "republish") send(all.slice(0, s.n));
      else {
        const charges = Array.from({ length: s.charges + s.refused }, (_, i): Charge => {
          const n = all.length + i;
          return { id: `c${n}`, account: `a${n % 3}`, amount: i < s.charges ? 100 + (n % 7) : 13 };
        });
        all.push(...charges);
        send(charges);
      }
    }
    await Promise.all(pending);
    const settled = await settle(SETTLE_MS, async () => (await jsm.streams.info(COMMANDS)).state.messages === 0);
    await sleep(300); // the appliers' last lines

    const violations: string[] = [];
    const left = (await jsm.streams.info(COMMANDS)).state.messages;
    if (!settled || left > 0) violations.push(`${left} command(s) still in ${COMMANDS} ${SETTLE_MS / 1000}s after the last step`);
    const ledger = new Map<string, number>();
    for (const m of await storedMessages(jsm, LEDGER)) {
      const id = m.subject.split(".").at(-1)!;
      ledger.set(id, (ledger.get(id) ?? 0) + 1);
    }
    // The bank's unique keys: a charge it took has its file (the "applied" lines can miss one: a kill
    // right after the bank answered).
    const charged = new Set(readdirSync(bankDir).map((f) => f.replace(/\.json$/, "")));
    const counts = { published: 0, unanswered: 0, applied: 0, refused: 0 };
    for (const c of all) {
      const state = (await states!.get(c.id))?.string();
      const answers = applied.get(c.id) ?? 0;
      const bank = charged.has(c.id) ? 1 : 0;
      const posted = ledger.get(c.id) ?? 0;
      if (answers > 1) violations.push(`${c.id}: the bank answered "applied" ${answers} times`);
      if (posted > 1) violations.push(`${c.id}: ${posted} ledger entries`);
      if (!stored.has(c.id)) {
        counts.unanswered++;
        if (!unanswered.has(c.id)) violations.push(`${c.id}: no answer to its publish`);
        continue;
      }
      counts.published++;
      if (c.amount === 13) {
        counts.refused++;
        if (bank || posted) violations.push(`${c.id}: refused by the bank, yet bank=${bank} ledger=${posted}`);
        if (!state?.startsWith("refused: ")) violations.push(`${c.id}: refused, but its state is ${state ?? "missing"}`);
      } else {
        if (bank === 1 && posted === 1) counts.applied++;
        else if (left === 0) violations.push(`${c.id}: bank=${bank} ledger=${posted} (each should be 1)`);
        if (left === 0 && state !== "applied") violations.push(`${c.id}: applied, but its state is ${state ?? "missing"}`);
      }
    }
    return { violations, counts, faults: rig.faults };
  } finally {
    await rig.close();
    rmSync(bankDir, { recursive: true, force: true });
  }
}

export const exactlyOnce: Scenario<Step> = {
  name: "exactly-once",
  model: "each stored charge applied once at the bank and once in the ledger, or refused with neither; none left",
  steps: schedule(publish, step),
  run,
};
