// The topology of per-key order, declared in one place. Events are published to order.<key>; the
// stream's subject transform puts each on order.<partition>.<key>, where partition(N, key) is a
// hash of the key (the server's, so every publisher agrees): all events of a key land in one
// partition, in the order they were stored. One durable consumer per partition, with one message in
// flight (max_ack_pending 1): the next event of a partition is delivered only once the one before
// it is acked, so a partition's events are handled one after another, in order.
// Workers share the partitions by leases in a KV bucket (leases.ts); what each key's events did is
// in another (state.ts).
import { AckPolicy, type ConsumerConfig, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, placed, replicas, type StreamSpec, UserError, versionAtLeast } from "@repo/kit";

export const STREAM = "ORDER_EVENTS";
export const PREFIX = "order";
export const LEASES = "order_partition_leases";
export const STATE = "order_state";

export interface Timings {
  /** How long a lease lives unless renewed (renewed every third of it): how soon a dead worker's partitions move. */
  leaseMs: number;
  /** How long a delivered event may go unanswered (a worker died) before it is delivered again. */
  ackWaitMs: number;
}
/** Production-like: a dead worker's partitions move within 10 s. The demo and the tests pass shorter ones. */
export const defaultTimings: Timings = { leaseMs: 10_000, ackWaitMs: 30_000 };

export const partitionSubject = (p: number) => `${PREFIX}.${p}.*`;
export const consumerFor = (p: number) => `partition-${p}`;

export const eventsStream = (partitions: number): StreamSpec => ({
  name: STREAM,
  subjects: [`${PREFIX}.*`], // publishers name the key only: order.<key>
  // Stored as order.<partition>.<key>: the server hashes the key (token 1) into one of N partitions.
  subject_transform: { src: `${PREFIX}.*`, dest: `${PREFIX}.{{partition(${partitions},1)}}.{{wildcard(1)}}` },
  retention: RetentionPolicy.Workqueue, // an event is removed once handled; each partition has one consumer
  storage: StorageType.File,
  duplicate_window: nanos(120_000), // a producer's resend (same msg id: <key>-<seq>) is stored once
});

export const partitionConsumer = (p: number, t: Timings): Partial<ConsumerConfig> => ({
  durable_name: consumerFor(p),
  filter_subject: partitionSubject(p), // this partition's events only
  ack_policy: AckPolicy.Explicit,
  max_ack_pending: 1, // one event in flight: the next waits for this one's ack (order within the partition)
  ack_wait: nanos(t.ackWaitMs),
  max_deliver: -1, // an event is never dropped: dropping one would let its key's later events overtake it
});

/** Subject transforms on a stream need nats-server 2.10. */
export const supported = (version: string | undefined) => versionAtLeast(version, "2.10.0");

/**
 * Creates (or checks) the stream, one consumer per partition and the two buckets. Refuses in one line
 * a server before 2.10, which would accept the stream and silently drop its subject transform, and an
 * existing stream with another number of partitions.
 */
export async function setup(jsm: JetStreamManager, nc: NatsConnection, partitions: number, t: Timings = defaultTimings) {
  const version = nc.info?.version;
  if (!supported(version))
    throw new UserError(`partitioned needs nats-server >= 2.10 (stream subject transforms); this server is ${version}`);
  const spec = eventsStream(partitions);
  const config = await ensureStream(jsm, spec, ["retention", "storage", "subject_transform"]);
  if (JSON.stringify(config.subject_transform) !== JSON.stringify(spec.subject_transform))
    throw new UserError(`stream ${STREAM} has no partition transform on nats-server ${version}: delete it ("nats stream rm ${STREAM}")`);
  for (let p = 0; p < partitions; p++)
    await ensureConsumer(jsm, STREAM, partitionConsumer(p, t), ["filter_subject", "max_ack_pending", "ack_policy", "max_deliver"]);
  const kvm = new Kvm(nc);
  // Leases: an entry per held partition (lease.<p>) and per live worker (member.<name>); the bucket's
  // max age is the lease: an entry not renewed within it is gone.
  const leases = await placed(() => kvm.create(LEASES, { history: 1, ttl: t.leaseMs, replicas: replicas() }));
  // Reads through the stream's leader, never a replica's direct get: a lagging replica's older state
  // would make the next event look like one whose predecessor never came, and end it.
  const state = await placed(() => kvm.create(STATE, { history: 1, replicas: replicas(), allow_direct: false }));
  // An existing bucket keeps its own max age: leases of another length would run out between renewals
  // (or outlive a dead worker), and a state that ages out would turn the next events into gaps.
  const [leaseTtl, stateTtl] = [(await leases.status()).ttl, (await state.status()).ttl];
  if (leaseTtl !== t.leaseMs)
    throw new UserError(
      `bucket ${LEASES} exists with leases of ${leaseTtl} ms, not ${t.leaseMs}: use LEASE_MS=${leaseTtl}, or delete it ("nats kv rm ${LEASES}")`,
    );
  if (stateTtl !== 0)
    throw new UserError(
      `bucket ${STATE} exists with a max age (${stateTtl} ms): key state must not expire; delete it ("nats kv rm ${STATE}")`,
    );
  if ((await jsm.streams.info(`KV_${STATE}`)).config.allow_direct)
    throw new UserError(
      `bucket ${STATE} exists with direct gets (a replica may answer with an older state); delete it ("nats kv rm ${STATE}")`,
    );
  return { leases, state };
}
