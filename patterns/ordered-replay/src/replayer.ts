// Replays the ledger in stream order with an ordered consumer: from the start, a sequence, a time, or
// where this replayer left off (its position is kept in a KV bucket). An ordered consumer is
// ephemeral, unacked and checked by the client: a gap (missed message, server restart) makes the
// client recreate it from the last sequence it saw, so the replay stays gap-free and in order.
import { DeliverPolicy, jetstream, type OrderedConsumerOptions } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, versionAtLeast } from "./nats.js";
import { STREAM } from "./setup.js";

export type StartAt = "start" | "resume" | { seq: number } | { time: Date };

export interface Entry {
  seq: number;
  subject: string;
  time: Date;
  data: Uint8Array;
}

export interface ReplayOptions {
  nc: NatsConnection;
  /** The replayer's name: the key of its position in the bucket. */
  name: string;
  /** Needed for "resume" and to save the position. */
  positions?: KV;
  from: StartAt;
  /** Subject filters (ledger.acct-1.>, ...). Several at once need nats-server 2.10; older ones filter here. */
  filter?: string[];
  /** Keep following new events after catching up, until `signal` aborts. */
  follow?: boolean;
  signal?: AbortSignal;
  /** Save the position every N events (and when stopping). A crash repeats at most N-1 events. */
  checkpointEvery?: number;
  handler: (e: Entry) => Promise<void> | void;
  log: Logger;
}

export interface ReplayResult {
  count: number;
  first?: number;
  last?: number;
  /** True when the server could not filter (several filters on < 2.10) and the client did. */
  clientSideFilter: boolean;
}

/** NATS subject matching, for the client-side filter: `*` one token, `>` the rest. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length || (f[i] !== "*" && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}

export async function loadPosition(positions: KV, name: string): Promise<number> {
  const e = await positions.get(name);
  return e && e.operation === "PUT" ? Number(e.string()) : 0;
}

export async function replay(o: ReplayOptions): Promise<ReplayResult> {
  const js = jetstream(o.nc);
  const opts: Partial<OrderedConsumerOptions> = {};
  if (o.from === "resume") {
    if (!o.positions) throw new Error("resume needs the positions bucket");
    const done = await loadPosition(o.positions, o.name);
    Object.assign(opts, done ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: done + 1 } : { deliver_policy: DeliverPolicy.All });
  } else if (o.from === "start") {
    opts.deliver_policy = DeliverPolicy.All;
  } else if ("seq" in o.from) {
    Object.assign(opts, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: o.from.seq });
  } else {
    Object.assign(opts, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: o.from.time.toISOString() });
  }

  const filters = o.filter ?? [];
  const multi = filters.length > 1;
  const serverFilters = !multi || versionAtLeast(o.nc.info?.version, "2.10.0");
  if (filters.length === 1) opts.filter_subjects = filters[0];
  else if (multi && serverFilters) opts.filter_subjects = filters;
  else if (multi) {
    o.log.warn({ server: o.nc.info?.version, filters }, "several subject filters need nats-server >= 2.10: replaying everything and filtering in the client (same order, more traffic)");
  }
  const wanted = (subject: string) => serverFilters || filters.some((f) => subjectMatches(f, subject));

  const consumer = await js.consumers.get(STREAM, opts);
  // Short pulls: the client notices missed heartbeats (a server restart, a lost consumer) within a few
  // seconds instead of the default 30s, and recreates the consumer after the last sequence it saw.
  const messages = await consumer.consume({ max_messages: 512, expires: 2_000 });
  const stop = () => messages.stop();
  o.signal?.addEventListener("abort", stop, { once: true });
  if (!o.follow) {
    const info = await consumer.info(); // nothing pending and nothing delivered: nothing to replay
    if (info.num_pending === 0 && info.delivered.consumer_seq === 0) messages.stop();
  }

  const result: ReplayResult = { count: 0, clientSideFilter: !serverFilters };
  const every = o.checkpointEvery ?? 100;
  let unsaved = 0;
  const save = async () => {
    if (o.positions && result.last !== undefined && unsaved > 0) await o.positions.put(o.name, String(result.last));
    unsaved = 0;
  };
  try {
    for await (const m of messages) {
      if (o.signal?.aborted) break; // events already buffered are not handled: the position says so
      if (wanted(m.subject)) {
        await o.handler({ seq: m.seq, subject: m.subject, time: m.time, data: m.data });
        result.count++;
        result.first ??= m.seq;
      }
      result.last = m.seq; // a filtered-out event is passed too: the position moves past it
      if (++unsaved >= every) await save();
      if (!o.follow && m.info.pending === 0) break; // caught up with the stream as it was
    }
  } finally {
    o.signal?.removeEventListener("abort", stop);
    await messages.close();
    await save();
  }
  return result;
}
