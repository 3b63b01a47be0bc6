// Replays the ledger in stream order with an ordered consumer: from the start, a sequence, a time, or
// where this replayer left off (its position is kept in a KV bucket). An ordered consumer is
// ephemeral, unacked and checked by the client: a gap (missed message, server restart) makes the
// client recreate it from the last sequence it saw, so the replay stays gap-free and in order.
import { DeliverPolicy, jetstream, type OrderedConsumerOptions } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { backoff, deadline, delay, type NatsConnection } from "@nats-io/transport-node";
import { type Logger, permissionDenied, versionAtLeast } from "@repo/kit";
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
  /** Save the position every N events (and when stopping). A crash repeats at most N events (N when it comes during a save). */
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
    Object.assign(
      opts,
      done ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: done + 1 } : { deliver_policy: DeliverPolicy.All },
    );
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
    o.log.warn(
      { server: o.nc.info?.version, filters },
      "several subject filters need nats-server >= 2.10: replaying everything and filtering in the client (same order, more traffic)",
    );
  }
  const wanted = (subject: string) => serverFilters || filters.some((f) => subjectMatches(f, subject));

  const result: ReplayResult = { count: 0, clientSideFilter: !serverFilters };
  const every = o.checkpointEvery ?? 100;
  let unsaved = 0;
  const save = async () => {
    if (o.positions && result.last !== undefined && unsaved > 0) await o.positions.put(o.name, String(result.last));
    unsaved = 0;
  };

  // nats.js recreates an ordered consumer after a gap or missed heartbeats. If even that gets stuck
  // (seen here when the stream leader is killed), a watchdog starts a new one after the last sequence.
  for (let restarts = 0; ; restarts++) {
    // After the last event seen; before any, where it was asked to start (the saved position, a
    // sequence, a time), not at seq 1.
    if (restarts > 0 && result.last !== undefined)
      Object.assign(opts, {
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: result.last + 1,
        opt_start_time: undefined,
      });
    // A save only every N events; the others pass without a promise (no await per event).
    const outcome = await replayOnce(js, opts, o, result, wanted, () => (++unsaved >= every ? save() : undefined)).finally(save);
    if (outcome !== "stalled" || o.signal?.aborted) return result;
    if (restarts >= 20) throw new Error(`replay of ${STREAM} stalled after sequence ${result.last ?? 0} and did not recover`);
    o.log.warn({ after: result.last ?? 0 }, "replay stalled: starting a new ordered consumer after the last sequence");
    await delay(restartPause.backoff(restarts));
  }
}

const STALL_CHECK_MS = 3_000;
/** Pauses before each new ordered consumer after a stall: a leader election takes a few seconds. */
const restartPause = backoff([500, 1_500, 2_500, 3_500, 4_500, 5_000]);

/** The promise's value, or undefined if it fails or takes longer than `ms` (a stall, to the caller). */
const within = <T>(p: Promise<T>, ms: number): Promise<T | undefined> => deadline(p, ms).catch(() => undefined);

/** One ordered consumer's run: "done" (caught up or aborted) or "stalled" (no progress, work pending). */
async function replayOnce(
  js: ReturnType<typeof jetstream>,
  opts: Partial<OrderedConsumerOptions>,
  o: ReplayOptions,
  result: ReplayResult,
  wanted: (subject: string) => boolean,
  passed: () => Promise<void> | undefined,
): Promise<"done" | "stalled"> {
  // While a cluster elects a new leader the JetStream API may not answer: give up after a while and
  // let the caller start over (bounded), rather than wait on a request that may never return.
  let refused: unknown;
  const consumer = await within(
    // A copy: nats.js fills in a name prefix on the object it is given, and a retry must not reuse it.
    js.consumers.get(STREAM, { ...opts }).catch((err: unknown) => {
      if (permissionDenied(err)) refused = err;
      else o.log.warn({ err: String(err) }, "replay: could not create the ordered consumer");
    }),
    10_000,
  );
  if (refused) throw refused; // not a stall: this user may not read the stream, and retrying will not change that
  if (!consumer) return "stalled";
  // Short pulls: the client notices missed heartbeats (a server restart, a lost consumer) within a few
  // seconds instead of the default 30s, and recreates the consumer after the last sequence it saw.
  const messages = await consumer.consume({ max_messages: 512, expires: 2_000 });
  const stop = () => messages.stop();
  o.signal?.addEventListener("abort", stop, { once: true });
  if (!o.follow) {
    const info = await within(consumer.info(), 10_000);
    if (!info) {
      o.signal?.removeEventListener("abort", stop);
      void messages.close().catch(() => undefined);
      return "stalled";
    }
    // nothing pending and nothing delivered: nothing to replay
    if (info.num_pending === 0 && info.delivered.consumer_seq === 0) messages.stop();
  }
  // The watchdog does not wait for the stuck iterator to end (it may not): it races it.
  let stalled = false;
  let progressed = true;
  let busy = false; // a slow handler is not a stall
  let checking = false;
  let abandoned = false; // a stuck iterator is left behind: its late messages are not handled
  let onStall = () => {};
  const stall = new Promise<"stall">((resolve) => (onStall = () => resolve("stall")));
  const watchdog = setInterval(async () => {
    if (progressed || busy || checking) {
      progressed = false;
      return;
    }
    checking = true;
    // No event for a while: fine if nothing is pending (following a quiet stream), a stall otherwise.
    o.log.debug({ after: result.last ?? 0 }, "replay made no progress: asking the consumer's info");
    const info = await within(consumer.info(), STALL_CHECK_MS);
    checking = false;
    // Events came, or one is being handled, while the question was out: not a stall. A next ordered
    // consumer would start after the last event finished, and replay the one in hand beside it. Nor
    // once this run has ended meanwhile.
    if (abandoned || progressed || busy) return;
    if (!info || info.num_pending > 0) {
      abandoned = true; // now: the pump starts no handler after this decision
      stalled = true;
      onStall();
    }
  }, STALL_CHECK_MS);
  // One race for the whole run, not one per message: a Promise.race on the long-lived `stall` promise
  // per message kept a reaction on it per message (client memory grew with the replay's length).
  const pump = (async () => {
    for await (const m of messages) {
      if (abandoned) break;
      progressed = true;
      if (o.signal?.aborted) break; // events already buffered are not handled: the position says so
      if (wanted(m.subject)) {
        busy = true;
        try {
          const handling = o.handler({ seq: m.seq, subject: m.subject, time: m.time, data: m.data });
          if (handling) await handling; // a synchronous handler costs no await per event
        } finally {
          busy = false;
        }
        result.count++;
        result.first ??= m.seq;
      }
      result.last = m.seq; // a filtered-out event is passed too: the position moves past it
      const saving = passed();
      if (saving) await saving;
      if (!o.follow && m.info.pending === 0) break; // caught up with the stream as it was
    }
  })();
  pump.catch(() => undefined); // an abandoned pump's late failure is not news
  try {
    await Promise.race([pump, stall]);
  } finally {
    abandoned = true;
    clearInterval(watchdog);
    o.signal?.removeEventListener("abort", stop);
    await within(messages.close(), 1_000);
  }
  return stalled ? "stalled" : "done";
}
