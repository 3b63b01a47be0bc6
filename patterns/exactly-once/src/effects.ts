// The two effects of a charge, each applied exactly once however often the command is delivered.
//
// Inside NATS: the effect is a publish, made idempotent twice over. Its msg id is the command id, so a
// repeat within the ledger's duplicate_window is acked as a duplicate; and it expects its subject
// (one per command) to be empty, so a repeat after the window fails with "wrong last sequence"
// (JetStream error 10071) for as long as the entry is kept: no time limit on a Limits stream.
//
// Outside NATS: the external system must take the command id as its idempotency key (a unique key in
// a database, an Idempotency-Key header): that key, not NATS, is what makes a repeat harmless. A KV
// record keeps the command's end: "applied" (a repeat is acked without calling the external system
// again) or "refused: <why>" (the external system said no for good: it is not asked again). No record
// means not known to be applied: the next delivery calls the external system with the same key, which
// applies it at most once. The record excludes nothing: two deliveries running at once (a late ack)
// both call it, and the key is what keeps that to one charge.
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

/** The external system refused the charge for good (a closed account, a declined card): trying again cannot help. */
export class ChargeRefused extends Error {}

/** The external system: applies a charge at most once per id (its idempotency key); throws ChargeRefused for a final no. */
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

export const APPLIED = "applied";
const REFUSED = "refused: ";

/** Charges at the bank unless the record says it ended: "applied", or ChargeRefused again for one refused before. */
export async function chargeOutside(states: KV, bank: Bank, c: Charge): Promise<Applied> {
  const state = (await states.get(c.id))?.string();
  if (state === APPLIED) return "already"; // no call to the bank
  if (state?.startsWith(REFUSED)) throw new ChargeRefused(state.slice(REFUSED.length));
  let result: Applied;
  try {
    result = await bank.charge(c);
  } catch (err) {
    if (err instanceof ChargeRefused) await states.put(c.id, `${REFUSED}${err.message}`);
    throw err;
  }
  await states.put(c.id, APPLIED);
  return result;
}
