// The inventory service's names, and the one piece of JetStream it uses: a KV bucket that keeps each
// reservation under its request id, so a request sent again (after a timeout) is answered with the
// first answer instead of reserving twice. Requests themselves are core NATS: no stream stores them.
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { placed, replicas } from "@repo/kit";

export const SERVICE = "inventory"; // the name discovery ($SRV.PING.inventory, ...) finds it by
/**
 * An instance's endpoint subjects: `inventory.v<major>.<endpoint>`. A caller is pinned to a major
 * version by its subject: 1.0.0 and 1.1.0 share `inventory.v1.*` (one queue group: a rolling deploy),
 * 2.0.0 runs beside them on `inventory.v2.*` until every caller has moved. No stream captures inventory.>.
 */
export const groupOf = (version: string): string => `inventory.v${version.split(".")[0]}`;
export const subjectOf = (endpoint: "quote" | "reserve" | "catalogue", version = "1"): string => `${groupOf(version)}.${endpoint}`;
export const RESERVATIONS = "inventory_reservations";
/** How long a reservation's answer is kept for a retry with its id: retry within this, or it reserves again. */
export const REMEMBER_MS = 24 * 60 * 60 * 1000;
/** Prices in cents: the catalogue is not the lesson. */
export const PRICES: Readonly<Record<string, number>> = { apple: 120, pear: 95, plum: 60 };

export async function setup(nc: NatsConnection): Promise<KV> {
  const kvm = new Kvm(nc);
  // history 1: only the reservation; ttl: the retry window above (max_age of the bucket's stream).
  return placed(() => kvm.create(RESERVATIONS, { history: 1, ttl: REMEMBER_MS, replicas: replicas() }));
}
