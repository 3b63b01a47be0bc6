// The topology of the fanout, declared in one place: the same order events go into two streams, one
// per retention choice, and each has the same three independent durable consumers.
import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, type StreamSpec } from "@repo/kit";

export type Retention = "limits" | "interest";

/** Consumers known at setup time; a late joiner (e.g. "audit") is added later with addConsumer(). */
export const CONSUMERS = ["billing", "shipping", "analytics"] as const;

export const streams: Record<Retention, StreamSpec & { prefix: string }> = {
  limits: {
    name: "ORDERS_LIMITS",
    prefix: "limits.orders",
    subjects: ["limits.orders.>"],
    retention: RetentionPolicy.Limits, // events are kept (up to max_age): history a late joiner can replay
    max_age: nanos(7 * 24 * 3600_000), // a week of history
    storage: StorageType.File,
  },
  interest: {
    name: "ORDERS_INTEREST",
    prefix: "interest.orders",
    subjects: ["interest.orders.>"],
    retention: RetentionPolicy.Interest, // an event is removed once every consumer bound to it has acked
    storage: StorageType.File,
  },
};

export function consumerConfig(name: string): Partial<ConsumerConfig> {
  return {
    durable_name: name, // its position survives restarts: it resumes where it left off
    ack_policy: AckPolicy.Explicit, // on Interest retention, acks are what frees an event
    deliver_policy: DeliverPolicy.All, // a new consumer starts at the oldest event the stream still has
    max_ack_pending: 256, // a slow consumer only holds back itself
  };
}

export async function addConsumer(jsm: JetStreamManager, retention: Retention, name: string): Promise<void> {
  await ensureConsumer(jsm, streams[retention].name, consumerConfig(name));
}

/** Creates both streams (the producer publishes to each), or checks that existing ones fit. Idempotent. */
export async function setupStreams(jsm: JetStreamManager): Promise<void> {
  for (const retention of ["limits", "interest"] as const) {
    const { prefix: _, ...spec } = streams[retention];
    await ensureStream(jsm, spec);
  }
}

/**
 * The demo's topology: both streams and the three consumers on each. A deployed service creates only
 * its own consumer (setupStreams, then addConsumer): on Interest retention every consumer that
 * exists holds every event until it acks, so one nobody reads keeps them for ever.
 */
export async function setup(jsm: JetStreamManager): Promise<void> {
  await setupStreams(jsm);
  for (const retention of ["limits", "interest"] as const) for (const name of CONSUMERS) await addConsumer(jsm, retention, name);
}
