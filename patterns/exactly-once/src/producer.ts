// Publishes charge commands. A command's id is its Nats-Msg-Id: a publish retried within the stream's
// duplicate_window is stored once. (After the window it would be stored again: the effects below hold
// anyway.)
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, jsonObject, MalformedPayload, publishBatch, runMain, type Tally } from "@repo/kit";
import { COMMAND_SUBJECT, COMMANDS } from "./setup.js";

export interface Charge {
  /** The command id: unique per business operation, never per attempt. A subject token: [A-Za-z0-9_-]. */
  id: string;
  account: string;
  /** In cents. */
  amount: number;
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;
/** A whole number of cents, more than none, that a JSON number holds exactly. */
const isCents = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) > 0;

/** A charge from its payload, checked: an id that can name a subject and a KV key, an account, an amount. */
export function parseCharge(data: Uint8Array): Charge {
  const c = jsonObject(data);
  if (typeof c.id !== "string" || !ID.test(c.id) || typeof c.account !== "string" || !isCents(c.amount)) {
    throw new MalformedPayload('expected {"id": [A-Za-z0-9_-]{1,64}, "account": string, "amount": a whole number of cents > 0}');
  }
  return { id: c.id, account: c.account, amount: c.amount as number };
}

const enc = new TextEncoder();
export const encodeCharge = (c: Charge) => ({ subject: COMMAND_SUBJECT, id: c.id, data: enc.encode(JSON.stringify(c)) });

/** Publishes through the kit's publisher: many in flight, each resent with its id after a timeout. */
export function publishCharges(nc: NatsConnection, charges: Charge[]): Promise<Tally> {
  return publishBatch(nc, charges.map(encodeCharge), { stream: COMMANDS, what: "charge(s)" });
}

export function charges(count: number, prefix: string, accounts = 3): Charge[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i}`, account: `acct-${i % accounts}`, amount: 100 + (i % 7) }));
}

// CLI: `tsx src/producer.ts [count]` requests `count` charges (setup must have run: the demo or the service does it).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const count = intOption("count", process.argv[2] ?? "10");
    const nc = await connectFromEnv("exactly-once-producer");
    const tally = await publishCharges(nc, charges(count, Date.now().toString(36)));
    log.info(tally, "requested");
    await nc.drain();
  });
}
