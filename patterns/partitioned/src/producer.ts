// Publishes order events to order.<key>, each with its key's next sequence number (1, 2, 3 …) and
// the msg id <key>-<seq>, so a resend after a timeout is stored once. A key's events are published
// one after another (each waits for the one before to be stored): its events are stored, and so
// delivered, in order. Different keys go in parallel.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, createPublisher, intOption, isEntry, jsonObject, MalformedPayload, runMain } from "@repo/kit";
import { PREFIX, STREAM } from "./setup.js";

export interface OrderEvent {
  key: string;
  /** 1 for a key's first event, then 2, 3 …: the order its events must be handled in. */
  seq: number;
  type: string;
  amount: number;
}

// A key is one subject token.
const KEY = /^[-\w]+$/;

/** An event from its payload, checked; a malformed one (MalformedPayload) is ended, never retried. */
export function parseEvent(data: Uint8Array): OrderEvent {
  const e = jsonObject(data);
  if (typeof e.key !== "string" || !KEY.test(e.key)) throw new MalformedPayload("expected a key of letters, digits, - and _");
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 1) throw new MalformedPayload("expected a seq of 1 or more");
  if (typeof e.type !== "string" || typeof e.amount !== "number") throw new MalformedPayload("expected a type and an amount");
  return { key: e.key, seq: e.seq as number, type: e.type, amount: e.amount };
}

/** `perKey` events for each of `keys` keys: key-<i>, seq 1..perKey. */
export function eventsFor(keys: number, perKey: number, prefix = "order"): OrderEvent[][] {
  const types = ["created", "item-added", "item-added", "paid", "shipped"];
  return Array.from({ length: keys }, (_, k) =>
    Array.from({ length: perKey }, (_, i) => ({ key: `${prefix}-${k}`, seq: i + 1, type: types[i % types.length]!, amount: i + 1 })),
  );
}

const enc = new TextEncoder();

/**
 * Publishes each key's events in order, the keys side by side. A key whose event could not be stored
 * stops there (its later events would wait for it for ever): `failed` names it. Returns the counts.
 */
export async function publishInOrder(nc: NatsConnection, byKey: OrderEvent[][]) {
  const publisher = createPublisher(nc, { stream: STREAM });
  let stored = 0;
  let duplicates = 0;
  let unpublished = 0;
  const failed: string[] = [];
  try {
    await Promise.all(
      byKey.map(async (events) => {
        for (const [i, e] of events.entries()) {
          const r = await publisher.publish({
            subject: `${PREFIX}.${e.key}`,
            data: enc.encode(JSON.stringify(e)),
            id: `${e.key}-${e.seq}`,
          });
          if (r.error) {
            failed.push(`${e.key} at seq ${e.seq}: ${r.error}`);
            unpublished += events.length - i;
            return;
          }
          if (r.duplicate) duplicates++;
          else stored++;
        }
      }),
    );
  } finally {
    publisher.close();
  }
  return { stored, duplicates, unpublished, failed };
}

// CLI: `tsx src/producer.ts [keys] [per-key]` publishes per-key events (setup must have run).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const keys = intOption("keys", process.argv[2] ?? "5");
    const perKey = intOption("per-key", process.argv[3] ?? "4");
    const nc = await connectFromEnv("partitioned-producer");
    const res = await publishInOrder(nc, eventsFor(keys, perKey, `order-${Date.now().toString(36)}`));
    log.info(res, "published");
    await nc.drain();
    if (res.failed.length > 0) process.exitCode = 1;
  });
}
