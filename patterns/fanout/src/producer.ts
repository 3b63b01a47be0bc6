// Publishes order events. The same event goes to both streams so the two retentions can be compared.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, publishBatch, runMain } from "@repo/kit";
import { type Retention, streams } from "./setup.js";

export interface OrderEvent {
  orderId: string;
  type: "created" | "paid" | "shipped";
  n: number;
}

export const EVENT_TYPES: OrderEvent["type"][] = ["created", "paid", "shipped"];

/** `count` orders, each created -> paid -> shipped: 3 * count events, in publish order. */
export function orderEvents(count: number, prefix = "o"): OrderEvent[] {
  let n = 0;
  return Array.from({ length: count }, (_, i) => EVENT_TYPES.map((type) => ({ orderId: `${prefix}-${i}`, type, n: n++ }))).flat();
}

/**
 * Publishes to each retention's stream through the fast publisher (many in flight, in order; see
 * publisher.ts). Each event's id is its Nats-Msg-Id, so a resent publish is stored once.
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
