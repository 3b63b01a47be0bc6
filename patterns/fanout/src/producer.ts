// Publishes order events. The same event goes to both streams so the two retentions can be compared.
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { pathToFileURL } from "node:url";
import { connectFromEnv, runMain, UserError } from "./nats.js";
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

/** Publishes in order (one at a time per event, so stream order = this order) to each retention's stream. */
export async function publishEvents(js: JetStreamClient, events: OrderEvent[], to: Retention[] = ["limits", "interest"]): Promise<void> {
  for (const e of events) {
    for (const r of to) {
      await js.publish(`${streams[r].prefix}.${e.type}`, JSON.stringify(e), { msgID: `${e.orderId}-${e.type}`, expect: { streamName: streams[r].name } });
    }
  }
}

// CLI: `tsx src/producer.ts [orders]` publishes `orders` orders' events (setup must have run: main.ts does it).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runMain("producer", async (_signal, log) => {
    const count = Number(process.argv[2] ?? 10);
    if (!Number.isInteger(count) || count < 1) throw new UserError(`orders must be a positive integer, got "${process.argv[2]}"`);
    const nc = await connectFromEnv("fanout-producer");
    await publishEvents(jetstream(nc), orderEvents(count, Date.now().toString(36)));
    log.info({ events: count * 3 }, "published");
    await nc.drain();
  });
}
