// Publishes order events. The same event goes to both streams so the two retentions can be compared.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, jsonObject, MalformedPayload, publishBatch, runMain } from "@repo/kit";
import { type Retention, streams } from "./setup.js";

export interface OrderEvent {
  orderId: string;
  type: "created" | "paid" | "shipped";
  n: number;
}

export const EVENT_TYPES: OrderEvent["type"][] = ["created", "paid", "shipped"];

/** An event from its payload, checked: a malformed one is a MalformedPayload. */
export function parseEvent(data: Uint8Array): OrderEvent {
  const o = jsonObject(data);
  const n = o.n;
  if (typeof o.orderId !== "string" || !EVENT_TYPES.includes(o.type as OrderEvent["type"]) || !Number.isSafeInteger(n) || (n as number) < 0)
    throw new MalformedPayload('expected {"orderId": string, "type": "created" | "paid" | "shipped", "n": a whole number >= 0}');
  return { orderId: o.orderId, type: o.type as OrderEvent["type"], n: o.n as number };
}

/** `count` orders, each created -> paid -> shipped: 3 * count events, in publish order. */
export function orderEvents(count: number, prefix = "o"): OrderEvent[] {
  let n = 0;
  return Array.from({ length: count }, (_, i) => EVENT_TYPES.map((type) => ({ orderId: `${prefix}-${i}`, type, n: n++ }))).flat();
}

/**
 * Publishes to each retention's stream through the fast publisher (many in flight, sent in order;
 * see publisher.ts). Each event's id is its Nats-Msg-Id, so a resent publish is stored once, after
 * those sent behind it.
 */
export async function publishEvents(nc: NatsConnection, events: OrderEvent[], to: Retention[] = ["limits", "interest"]): Promise<void> {
  for (const r of to) {
    const msgs = events.map((e) => ({
      subject: `${streams[r].prefix}.${e.type}`,
      data: enc.encode(JSON.stringify(e)),
      id: `${e.orderId}-${e.type}`,
    }));
    await publishBatch(nc, msgs, { stream: streams[r].name, what: `event(s) to ${streams[r].name}` });
  }
}

const enc = new TextEncoder();

// CLI: `tsx src/producer.ts [orders]` publishes `orders` orders' events (setup must have run: main.ts does it).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const count = intOption("orders", process.argv[2] ?? "10");
    const nc = await connectFromEnv("fanout-producer");
    await publishEvents(nc, orderEvents(count, Date.now().toString(36)));
    log.info({ events: count * 3 }, "published");
    await nc.drain();
  });
}
