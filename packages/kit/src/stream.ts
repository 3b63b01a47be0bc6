// Declaring topology: create a stream or consumer, or check that the existing one has the settings a
// pattern depends on. A mismatch is reported, never silently changed: a stream may hold someone's data.
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { delay } from "@nats-io/transport-node";
import { ApiCodes, apiCode, isNotFound, isTimeout, UserError } from "./errors.js";

export type StreamSpec = Partial<StreamConfig> & { name: string };

/** Copies of each stream: NATS_REPLICAS (3 on a 3-node cluster), default 1. */
export function replicas(): number {
  const n = Number(process.env.NATS_REPLICAS ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new UserError(`NATS_REPLICAS must be 1 to 5, got "${process.env.NATS_REPLICAS}"`);
  return n;
}

/** Creates the stream, or checks that the existing one agrees on `keys`. Returns its config. */
export async function ensureStream(
  jsm: JetStreamManager,
  want: StreamSpec,
  keys: (keyof StreamConfig)[] = ["retention", "storage"],
): Promise<StreamConfig> {
  try {
    const { config } = await placed(() => jsm.streams.info(want.name));
    for (const key of keys) {
      if (want[key] !== undefined && JSON.stringify(config[key]) !== JSON.stringify(want[key])) {
        const have = `${key}=${JSON.stringify(config[key])}`;
        throw new UserError(
          `stream ${want.name} exists with ${have} but this pattern needs ${key}=${JSON.stringify(want[key])} — delete it ("nats stream rm ${want.name}") or use another server`,
        );
      }
    }
    return config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
    const created = await addStream(jsm, { num_replicas: replicas(), ...want });
    // A replicated stream answers publishes only once its replicas have elected a leader: until then a
    // publish gets "no responders". Wait for the leader (bounded) so callers can publish at once.
    for (let i = 0; i < 100 && (created.config.num_replicas ?? 1) > 1; i++) {
      if ((await placed(() => jsm.streams.info(want.name))).cluster?.leader) break;
      await delay(100);
    }
    return created.config;
  }
}

/**
 * Creates, trying again for up to 20 s while the cluster cannot place the replicas (JetStream error
 * 10005: a cluster that has just started may not know yet that its peers have JetStream, even once
 * all nodes are healthy and current, for streams and for their consumers) or does not answer in time
 * (a young or busy R3 cluster's create or info can time out). Trying again is safe: creating a
 * stream, consumer or bucket that exists with the same config succeeds. The setup's reads (stream
 * and consumer info) go through it too.
 */
export async function placed<T>(create: () => Promise<T>): Promise<T> {
  const until = Date.now() + 20_000;
  for (;;) {
    try {
      return await create();
    } catch (err) {
      if ((apiCode(err) !== ApiCodes.ClusterNoPeers && !isTimeout(err)) || Date.now() > until) throw err;
      await delay(250);
    }
  }
}

const addStream = (jsm: JetStreamManager, config: StreamSpec) => placed(() => jsm.streams.add(config));

/**
 * Creates the durable consumer `want.durable_name` on `stream` unless it exists, or checks that the
 * existing one agrees on `keys` (reported, never changed: other processes may rely on it). Returns its config.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  want: Partial<ConsumerConfig>,
  keys: (keyof ConsumerConfig)[] = [],
): Promise<ConsumerConfig> {
  const name = want.durable_name ?? want.name;
  if (!name) throw new Error("ensureConsumer needs a durable_name");
  try {
    const { config } = await placed(() => jsm.consumers.info(stream, name));
    for (const key of keys) {
      if (want[key] !== undefined && JSON.stringify(config[key] ?? null) !== JSON.stringify(want[key])) {
        throw new UserError(
          `consumer ${name} on ${stream} exists with ${key}=${JSON.stringify(config[key])} but this pattern needs ${key}=${JSON.stringify(want[key])} — delete it ("nats consumer rm ${stream} ${name}") or use the same settings`,
        );
      }
    }
    return config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
    return (await placed(() => jsm.consumers.add(stream, want))).config;
  }
}
