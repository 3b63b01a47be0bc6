// The topology of exactly-once effects, declared in one place:
// - CHARGES: the commands ("charge account A amount N"), a work queue; each command's id is its msg id.
// - LEDGER: the effect inside NATS, one entry per command on its own subject, kept (Limits), so the
//   subject itself says "applied" for as long as the entry is kept, with no time window.
// - charge_states: a KV bucket with each command's end outside NATS (applied, or refused: why).
import { AckPolicy, type ConsumerConfig, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, placed, replicas, type StreamSpec } from "@repo/kit";

export const COMMANDS = "CHARGES";
export const COMMAND_SUBJECT = "charges.requested";
export const LEDGER = "CHARGE_LEDGER";
export const ledgerSubject = (chargeId: string) => `charges.ledger.${chargeId}`;
export const STATES_BUCKET = "charge_states";
export const CONSUMER = "applier";

export interface Timings {
  /** How long the server remembers a msg id, on both streams (default 2 min, the server's default). */
  windowMs: number;
  /** How long a delivery may go unacked before it is handed out again (default 30 s). */
  ackWaitMs: number;
}
export const defaultTimings: Timings = { windowMs: 2 * 60_000, ackWaitMs: 30_000 };

export const commandsStream = (t: Timings): StreamSpec => ({
  name: COMMANDS,
  subjects: [COMMAND_SUBJECT],
  retention: RetentionPolicy.Workqueue, // a command is removed once applied and acked
  storage: StorageType.File,
  duplicate_window: nanos(t.windowMs), // a retried publish of a command within this window is stored once
});

export const ledgerStream = (t: Timings): StreamSpec => ({
  name: LEDGER,
  subjects: ["charges.ledger.*"],
  retention: RetentionPolicy.Limits, // entries are kept: an entry on a command's subject means "applied"
  storage: StorageType.File,
  duplicate_window: nanos(t.windowMs),
});

/** Deliveries after which each further try of a command is logged as an error (about 7 minutes in). */
export const LOUD_AFTER = 20;

export const applierConsumer = (t: Timings): Partial<ConsumerConfig> => ({
  durable_name: CONSUMER,
  ack_policy: AckPolicy.Explicit, // acked only after both effects are applied
  ack_wait: nanos(t.ackWaitMs), // then the command is delivered again: the effects must be idempotent
  // Unlimited: a command is ended only by the applier (applied, or refused by the bank). With a limit,
  // the last delivery dying unanswered would leave the command in the stream, never delivered again.
  max_deliver: -1,
  max_ack_pending: 256,
});

/** Creates the streams, the consumer and the states bucket, or checks them. Idempotent. */
export async function setup(jsm: JetStreamManager, nc: NatsConnection, timings: Partial<Timings> = {}): Promise<KV> {
  const t = { ...defaultTimings, ...timings };
  await ensureStream(jsm, commandsStream(t));
  await ensureStream(jsm, ledgerStream(t));
  await ensureConsumer(jsm, COMMANDS, applierConsumer(t), ["ack_policy", "max_deliver"]);
  // history 1: only the current state matters. File storage: states survive restarts.
  return placed(() => new Kvm(nc).create(STATES_BUCKET, { history: 1, storage: StorageType.File, replicas: replicas() }));
}
