// The topology of ordered replay, declared in one place: a LEDGER stream of account events (the
// history to replay) and a KV bucket where each replayer keeps its position.
import { type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureStream, placed, replicas, type StreamSpec } from "@repo/kit";

export const STREAM = "LEDGER";
export const SUBJECT_PREFIX = "ledger";
export const POSITIONS_BUCKET = "replay_positions";

export const ledgerStream: StreamSpec = {
  name: STREAM,
  subjects: [`${SUBJECT_PREFIX}.>`], // ledger.<account>.<credit|debit>
  retention: RetentionPolicy.Limits, // the history is kept: replays read it, nothing consumes it away
  storage: StorageType.File,
};

/** Creates the stream and the positions bucket, or checks the existing stream. Idempotent. */
export async function setup(jsm: JetStreamManager, nc: NatsConnection): Promise<KV> {
  await ensureStream(jsm, ledgerStream);
  // history 1: only the latest position per replayer matters. File storage: positions survive restarts.
  return placed(() => new Kvm(nc).create(POSITIONS_BUCKET, { history: 1, storage: StorageType.File, replicas: replicas() }));
}
