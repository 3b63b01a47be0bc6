// The topology of event sourcing, declared in one place:
// - EVENTS: every account's events, one subject per account (events.account.<id>), kept (Limits).
//   On nats-server >= 2.12 it allows atomic batches (a command's events stored together or not at all).
// - account_snapshots: a KV bucket with each account's state at some version, to rebuild faster.
// - balances: a durable consumer feeding the projection (the read model), in the bucket account_balances.
import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, placed, replicas, type StreamSpec, UserError, versionAtLeast } from "@repo/kit";

export const STREAM = "EVENTS";
export const subjectOf = (account: string) => `events.account.${account}`;
export const accountOf = (subject: string) => subject.slice("events.account.".length);
export const SNAPSHOTS = "account_snapshots";
export const BALANCES = "account_balances";
export const PROJECTION = "balances";

/** Atomic batches: nats-server >= 2.12. Older servers store a multi-event command as one commit message. */
export const atomicBatches = (version: string | undefined) => versionAtLeast(version, "2.12.0");

export const eventsStream = (atomic: boolean): StreamSpec => ({
  name: STREAM,
  subjects: ["events.account.*"],
  retention: RetentionPolicy.Limits, // the events are the truth: kept, never consumed away
  storage: StorageType.File,
  ...(atomic ? { allow_atomic: true } : {}), // several events of one command stored all or none
});

export const projectionConsumer: Partial<ConsumerConfig> = {
  durable_name: PROJECTION, // its position survives restarts
  ack_policy: AckPolicy.Explicit, // acked after the read model took the event
  deliver_policy: DeliverPolicy.All,
  max_ack_pending: 512,
};

export interface Stores {
  snapshots: KV;
  balances: KV;
  /** Whether this server stores a command's events as an atomic batch. */
  atomic: boolean;
}

/** Creates the stream, the buckets and the projection's consumer, or checks them. Idempotent. */
export async function setup(jsm: JetStreamManager, nc: NatsConnection): Promise<Stores> {
  const atomic = atomicBatches(nc.info?.version);
  const config = await ensureStream(jsm, eventsStream(atomic));
  // A server that does not know a field drops it silently: check that it took it.
  if (atomic && config.allow_atomic !== true) {
    throw new UserError(
      `stream ${STREAM} has no allow_atomic on nats-server ${nc.info?.version}: delete it ("nats stream rm ${STREAM}") so it is made again`,
    );
  }
  await ensureConsumer(jsm, STREAM, projectionConsumer);
  const kvm = new Kvm(nc);
  const bucket = (name: string) => placed(() => kvm.create(name, { history: 1, storage: StorageType.File, replicas: replicas() }));
  return { snapshots: await bucket(SNAPSHOTS), balances: await bucket(BALANCES), atomic };
}
