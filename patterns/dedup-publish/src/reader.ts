// Reads back what the stream stored, to check the promise: every payment id is stored exactly once.
// (The demo's auditor, not a consumer of payments: it creates no durable state on the server.)
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { STREAM } from "./setup.js";

export interface StoredPayment {
  seq: number;
  /** The Nats-Msg-Id it was published with. */
  id: string;
}

/** Every message in the stream now, in order, through an ordered consumer (no server-side state). */
export async function readStored(nc: NatsConnection): Promise<StoredPayment[]> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(STREAM);
  if (state.messages === 0) return [];
  const consumer = await js.consumers.get(STREAM);
  const out: StoredPayment[] = [];
  const messages = await consumer.consume();
  for await (const m of messages) {
    out.push({ seq: m.seq, id: m.headers?.get("Nats-Msg-Id") ?? "" });
    if (m.seq >= state.last_seq) break;
  }
  await messages.close();
  return out;
}

/** Ids stored more than once: empty when the publisher kept its promise. */
export function storedTwice(stored: StoredPayment[]): string[] {
  const seen = new Set<string>();
  return stored.filter((s) => seen.has(s.id) || !seen.add(s.id)).map((s) => s.id);
}
