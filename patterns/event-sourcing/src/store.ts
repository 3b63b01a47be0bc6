// The event store: rebuild an account (snapshot + later events), append a command's events with
// optimistic concurrency, and execute commands: load, decide, append; on a conflict, again.
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { backoff, delay, headers } from "@nats-io/transport-node";
import { ApiCodes, apiCode, isTransient, jsonObject, MalformedPayload, nextStored } from "@repo/kit";
import { type Account, type AccountEvent, type Command, decide, empty, fold, isAccount } from "./account.js";
import { STREAM, subjectOf } from "./setup.js";

/** One stored message: an event, or (servers without atomic batches) a commit of several. */
type Stored = (AccountEvent & { command: string }) | { command: string; commit: AccountEvent[] };

export const eventsOf = (s: Stored): AccountEvent[] => ("commit" in s ? s.commit : [s]);

const TYPES = new Set(["opened", "deposited", "withdrawn", "fee_charged"]);

function parseEvent(o: Record<string, unknown>): AccountEvent {
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw new MalformedPayload(`not an account event: ${JSON.stringify(o)}`);
  if (o.type === "opened" && typeof o.owner === "string") return { type: "opened", owner: o.owner };
  // Read as leniently as it was ever written: any whole amount above zero (commands decided before
  // amounts had to be safe integers stored some beyond 2^53). decide() is strict about new ones.
  if (TYPES.has(String(o.type)) && Number.isInteger(o.amount) && (o.amount as number) > 0)
    return { type: o.type as "deposited" | "withdrawn" | "fee_charged", amount: o.amount as number };
  throw new MalformedPayload(`not an account event: ${JSON.stringify(o).slice(0, 120)}`);
}

/** A stored message, checked: an event, or a commit of several, each with its command id. */
export function parseStored(data: Uint8Array): Stored {
  const o = jsonObject(data);
  const command = String(o.command ?? "");
  if (Array.isArray(o.commit)) return { command, commit: o.commit.map((e) => parseEvent(e as Record<string, unknown>)) };
  return { ...parseEvent(o), command };
}

export interface Loaded {
  state: Account;
  /** Commands whose events were folded in (after the starting state). */
  commands: string[];
}

/** A tail this short is read message by message (no consumer is made); a longer one by an ordered consumer. */
const SHORT_TAIL = 32;

/**
 * The account's state: `from` (a snapshot, or empty) plus every event after it, in order. Only that
 * account's events are read: message by message with next_by_subj while the tail is short (a command
 * usually finds a few new events), then through an ordered consumer filtered to the account's subject.
 */
export async function load(js: JetStreamClient, jsm: JetStreamManager, account: string, from: Account = empty): Promise<Loaded> {
  const subject = subjectOf(account);
  const last = await jsm.streams.getMessage(STREAM, { last_by_subj: subject });
  const loaded: Loaded = { state: from, commands: [] };
  const take = (seq: number, data: Uint8Array) => {
    const stored = parseStored(data);
    for (const e of eventsOf(stored)) loaded.state = fold(loaded.state, e, seq);
    loaded.commands.push(stored.command);
  };
  if (!last || last.seq <= from.version) return loaded;
  for (let i = 0; i < SHORT_TAIL; i++) {
    const m = await nextStored(jsm, STREAM, loaded.state.version + 1, subject);
    if (!m) return loaded;
    take(m.seq, m.data);
    if (m.seq >= last.seq) return loaded;
  }
  const consumer = await js.consumers.get(STREAM, {
    filter_subjects: subject, // one filter as a string: a list needs nats-server 2.10
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: loaded.state.version + 1,
  });
  const messages = await consumer.consume({ max_messages: 256 });
  for await (const m of messages) {
    take(m.seq, m.data);
    if (m.seq >= last.seq) break;
  }
  await messages.close();
  return loaded;
}

/** The state from the account's snapshot (if any) and the events after it. */
export async function rebuild(js: JetStreamClient, jsm: JetStreamManager, snapshots: KV, account: string): Promise<Account> {
  const snap = await snapshots.get(account);
  const saved: unknown = snap?.operation === "PUT" ? snap.json() : undefined;
  const from = isAccount(saved) ? saved : empty; // a snapshot that is not an account's state: the whole history instead
  return (await load(js, jsm, account, from)).state;
}

export async function saveSnapshot(snapshots: KV, account: string, state: Account): Promise<void> {
  await snapshots.put(account, JSON.stringify(state));
}

const enc = (s: Stored) => JSON.stringify(s);

/** Where an append was stored; `duplicate`: the stream had the command's msg id already, nothing new was stored. */
export interface Appended {
  seq: number;
  duplicate: boolean;
}

/**
 * Appends a command's events if the account's last event is still `state.version`, else fails with
 * JetStream's "wrong last sequence" (10071): another writer won the race. Several events are stored
 * together: an atomic batch (nats-server >= 2.12), else one commit message. The command id is the
 * msg id of its (first) message, so within the stream's duplicate window a command stored already is
 * answered as a duplicate, whatever state the caller started from.
 */
export async function append(js: JetStreamClient, atomic: boolean, c: Command, state: Account, events: AccountEvent[]): Promise<Appended> {
  const subject = subjectOf(c.account);
  const expect = { lastSubjectSequence: state.version };
  if (events.length === 1 || !atomic) {
    const stored: Stored = events.length === 1 ? { ...events[0]!, command: c.id } : { command: c.id, commit: events };
    const ack = await js.publish(subject, enc(stored), { msgID: c.id, expect });
    return { seq: ack.seq, duplicate: ack.duplicate };
  }
  // Only the first message carries the expectation and the msg id: they gate the whole batch, which
  // the server stores all together or not at all.
  const [first, ...rest] = events.map((e) => enc({ ...e, command: c.id }));
  try {
    const batch = await js.startBatch(subject, first, { expect, msgID: c.id });
    for (const data of rest.slice(0, -1)) await batch.add(subject, data, { ack: true });
    // The commit goes through js.publish, which reports the server's error with its code (nats.js's
    // batch.commit() reports any error answer as a miscount).
    const h = headers();
    h.set("Nats-Batch-Id", batch.id);
    h.set("Nats-Batch-Sequence", String(batch.count + 1));
    h.set("Nats-Batch-Commit", "1");
    return { seq: (await js.publish(subject, rest.at(-1), { headers: h })).seq, duplicate: false };
  } catch (err) {
    // A batch whose msg id the stream has is refused whole (10201), naming where the first was stored.
    if (apiCode(err) === BATCH_HAS_DUPLICATE) return { seq: 0, duplicate: true };
    throw err;
  }
}

/** JSAtomicPublishContainsDuplicateMessageErr: a message of the batch has a msg id the stream has already. */
const BATCH_HAS_DUPLICATE = 10201;

/** How a command ended, and the account's state after it (pass it as `known` to the next command). */
export type Result = { conflicts: number; state: Account } & ({ accepted: true; events: number } | { accepted: false; reason: string });

/** Conflicts are retried after a short, jittered pause; this many at most. */
const MAX_TRIES = 50;
const conflictPause = backoff([0, 5, 10, 20, 40, 80]);

/**
 * Load, decide, append; on a conflict (another writer appended first), again on the new state. The
 * state comes from `known` (what the caller saw last: only the events since are read), else the
 * snapshot, else the whole history. A command already in what was read (or, within the duplicate
 * window, known by its msg id) is accepted without appending again.
 */
export async function execute(
  js: JetStreamClient,
  jsm: JetStreamManager,
  atomic: boolean,
  c: Command,
  from: { known?: Account; snapshots?: KV } = {},
): Promise<Result> {
  const start = from.known ?? (from.snapshots ? await rebuild(js, jsm, from.snapshots, c.account) : empty);
  // A command run again (its caller retried after a crash or a lost answer) may be stored already.
  const history = await load(js, jsm, c.account, start);
  if (history.commands.includes(c.id)) return { accepted: true, conflicts: 0, events: 0, state: history.state };
  let state = history.state;
  let passing = 0; // passing failures (isTransient), paused and bounded like conflicts
  for (let conflicts = 0; conflicts < MAX_TRIES; ) {
    const decision = decide(state, c);
    if ("rejected" in decision) return { accepted: false, conflicts, reason: decision.rejected, state };
    try {
      const { seq, duplicate } = await append(js, atomic, c, state, decision);
      // Stored before (a retry from a state that already held it, or a racing copy of this
      // command): nothing new to fold; what came since the state is read, the command included.
      if (duplicate) return { accepted: true, conflicts, events: 0, state: (await load(js, jsm, c.account, state)).state };
      return { accepted: true, conflicts, events: decision.length, state: decision.reduce((s, e) => fold(s, e, seq), state) };
    } catch (err) {
      // A conflict: another writer appended first, or (10158, clustered streams) a copy of this very
      // command is being stored right now. Both are settled by reading what came since.
      if (apiCode(err) === ApiCodes.StreamWrongLastSequence || apiCode(err) === ApiCodes.DuplicateInProcess) {
        conflicts++;
        await delay(conflictPause.backoff(conflicts));
      } else if (!isTransient(err) || ++passing > MAX_TRIES) throw err;
      else await delay(conflictPause.backoff(passing)); // a full ingest queue, a leader election: not at once
      // A conflict, or no answer (the append may have been stored): read what came since, then decide again.
      const since = await load(js, jsm, c.account, state);
      if (since.commands.includes(c.id)) return { accepted: true, conflicts, events: decision.length, state: since.state };
      state = since.state;
    }
  }
  return { accepted: false, conflicts: MAX_TRIES, reason: `gave up after ${MAX_TRIES} conflicts`, state };
}
