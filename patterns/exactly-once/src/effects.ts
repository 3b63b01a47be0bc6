// The two effects of a charge, each applied exactly once however often the command is delivered.
//
// Inside NATS: the effect is a publish, made idempotent twice over. Its msg id is the command id, so a
// repeat within the ledger's duplicate_window is acked as a duplicate; and it expects its subject
// (one per command) to be empty, so a repeat after the window fails with "wrong last sequence"
// (JetStream error 10071) for as long as the entry is kept: no time limit on a Limits stream.
//
// Outside NATS: the external system must take the command id as its idempotency key (a unique key in
// a database, an Idempotency-Key header): that key, not NATS, is what makes a repeat harmless. A KV
// record tracks the command's state, claimed -> applied: a repeat of an applied command is acked
// without calling the external system; a crash between claim and apply leaves it claimed, and the
// next delivery calls the external system again with the same key, which applies it at most once.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ApiCodes, apiCode } from "@repo/kit";
import type { Charge } from "./producer.js";
import { LEDGER, ledgerSubject } from "./setup.js";

/** What an effect found: it applied it now, or it had been applied before (by any delivery). */
export type Applied = "applied" | "already";

export async function postToLedger(js: JetStreamClient, c: Charge): Promise<Applied> {
  const entry = JSON.stringify({ charge: c.id, account: c.account, amount: c.amount });
  try {
    const ack = await js.publish(ledgerSubject(c.id), entry, {
      msgID: c.id, // a repeat within the duplicate window: acked as a duplicate, not stored
      expect: { streamName: LEDGER, lastSubjectSequence: 0 }, // a repeat after it: refused, the subject is taken
    });
    return ack.duplicate ? "already" : "applied";
  } catch (err) {
    if (apiCode(err) === ApiCodes.StreamWrongLastSequence) return "already";
    throw err;
  }
}

/** The external system: applies a charge at most once per id (its idempotency key). */
export interface Bank {
  charge(c: Charge): Promise<Applied>;
  /** Ids charged so far. */
  charged(): string[];
}

/**
 * A stand-in for a database with a unique key: one file per charge, created only if absent (O_EXCL),
 * which holds across processes and crashes like a unique index does.
 */
export function directoryBank(dir: string): Bank {
  mkdirSync(dir, { recursive: true });
  return {
    async charge(c) {
      try {
        writeFileSync(join(dir, `${c.id}.json`), JSON.stringify(c), { flag: "wx" });
        return "applied";
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") return "already";
        throw err;
      }
    },
    charged: () => readdirSync(dir).map((f) => f.replace(/\.json$/, "")),
  };
}

export const CLAIMED = "claimed";
export const APPLIED = "applied";

export async function chargeOutside(states: KV, bank: Bank, c: Charge): Promise<Applied> {
  const state = await states.get(c.id);
  if (state?.operation === "PUT" && state.string() === APPLIED) return "already"; // no call to the bank
  // Claim it (create fails if the key exists). A claim that exists was left by a delivery that died
  // or is still running (a late ack): the bank's key makes calling it again harmless.
  if (!state) await states.create(c.id, CLAIMED).catch(() => undefined);
  const result = await bank.charge(c);
  await states.put(c.id, APPLIED);
  return result;
}
