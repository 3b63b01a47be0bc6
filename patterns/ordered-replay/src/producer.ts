// Appends account events to the ledger.
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { pathToFileURL } from "node:url";
import { connectFromEnv, runMain, UserError } from "./nats.js";
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

/** Appends events with up to `window` acks outstanding; returns the stream sequences, in order. */
export async function appendEvents(js: JetStreamClient, events: LedgerEvent[], window = 128): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < events.length; i += window) {
    const acks = await Promise.all(
      events.slice(i, i + window).map((e) => js.publish(`${SUBJECT_PREFIX}.${e.account}.${e.kind}`, JSON.stringify(e), { expect: { streamName: STREAM } })),
    );
    seqs.push(...acks.map((a) => a.seq));
  }
  return seqs;
}

// CLI: `tsx src/producer.ts [count]` appends `count` events (setup must have run: main.ts does it).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runMain("producer", async (_signal, log) => {
    const count = Number(process.argv[2] ?? 10);
    if (!Number.isInteger(count) || count < 1) throw new UserError(`count must be a positive integer, got "${process.argv[2]}"`);
    const nc = await connectFromEnv("ledger-producer");
    const seqs = await appendEvents(jetstream(nc), ledgerEvents(count));
    log.info({ first: seqs[0], last: seqs.at(-1) }, "appended");
    await nc.drain();
  });
}
