// Appends account events to the ledger.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, publishBatch, runMain } from "@repo/kit";
import { STREAM, SUBJECT_PREFIX } from "./setup.js";

export interface LedgerEvent {
  account: string;
  kind: "credit" | "debit";
  amount: number;
  n: number;
}

export function ledgerEvents(count: number, accounts = 4, start = 0): LedgerEvent[] {
  return Array.from({ length: count }, (_, i) => ({
    account: `acct-${(start + i) % accounts}`,
    kind: (start + i) % 3 === 0 ? "debit" : "credit",
    amount: 1 + ((start + i) % 97),
    n: start + i,
  }));
}

/**
 * Appends events through the fast publisher (up to `window` in flight, sent in order; see
 * publisher.ts); returns the stream sequences, in input order. No msg ids: an event whose ack never
 * comes is reported, not resent, so a retry cannot append it twice. One answered "nothing stored"
 * (503) is sent again and is stored after those sent behind it: `window` 1 keeps append order then.
 */
export async function appendEvents(nc: NatsConnection, events: LedgerEvent[], window = 1024): Promise<number[]> {
  const seqs: number[] = new Array(events.length);
  const msgs = events.map((e) => ({ subject: `${SUBJECT_PREFIX}.${e.account}.${e.kind}`, data: enc.encode(JSON.stringify(e)) }));
  await publishBatch(nc, msgs, { stream: STREAM, window, what: "event(s)" }, (r, i) => (seqs[i] = r.seq));
  return seqs;
}

const enc = new TextEncoder();

// CLI: `tsx src/producer.ts [count]` appends `count` events (setup must have run: main.ts does it).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const count = intOption("count", process.argv[2] ?? "10");
    const nc = await connectFromEnv("ledger-producer");
    const seqs = await appendEvents(nc, ledgerEvents(count));
    log.info({ first: seqs[0], last: seqs.at(-1) }, "appended");
    await nc.drain();
  });
}
