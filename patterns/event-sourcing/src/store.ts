// The event store: rebuild an account (snapshot + later events), append a command's events with
// optimistic concurrency, and execute commands: load, decide, append; on a conflict, again.
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { backoff, delay } from "@nats-io/transport-node";
import { ApiCodes, apiCode, isTransient, jsonObject, MalformedPayload, nextStored } from "@repo/kit";
import { type Account, type AccountEvent, type Command, decide, empty, fold } from "./account.js";
import { STREAM, subjectOf } from "./setup.js";

/** One stored message: an event, or (servers without atomic batches) a commit of several. */
type Stored = (AccountEvent & { command: string }) | { command: string; commit: AccountEvent[] };

export const eventsOf = (s: Stored): AccountEvent[] => ("commit" in s ? s.commit : [s]);

const TYPES = new Set(["opened", "deposited", "withdrawn", "fee_charged"]);

function parseEvent(o: Record<string, unknown>): AccountEvent {
  if (o.type === "opened" && typeof o.owner === "string") return { type: "opened", owner: o.owner };
  if (TYPES.has(String(o.type)) && Number.isInteger(o.amount))
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
  const from = snap?.operation === "PUT" ? snap.json<Account>() : empty;
  return (await load(js, jsm, account, from)).state;
}

export async function saveSnapshot(snapshots: KV, account: string, state: Account): Promise<void> {
  await snapshots.put(account, JSON.stringify(state));
}

const enc = (s: Stored) => JSON.stringify(s);

/**
 * Appends a command's events if the account's last event is still `state.version`, else fails with
 * JetStream's "wrong last sequence" (10071): another writer won the race. Several events are stored
 * together: an atomic batch (nats-server >= 2.12), else one commit message.
 */
export async function append(js: JetStreamClient, atomic: boolean, c: Command, state: Account, events: AccountEvent[]): Promise<number> {
  const subject = subjectOf(c.account);
  const expect = { lastSubjectSequence: state.version };
  if (events.length === 1 || !atomic) {
    const stored: Stored = events.length === 1 ? { ...events[0]!, command: c.id } : { command: c.id, commit: events };
    return (await js.publish(subject, enc(stored), { msgID: c.id, expect })).seq;
  }
  // Only the first message carries the expectation: it gates the whole batch, which the server
  // stores all together or not at all.
  const [first, ...rest] = events.map((e) => enc({ ...e, command: c.id }));
  const batch = await js.startBatch(subject, first, { expect });
  for (const data of rest.slice(0, -1)) await batch.add(subject, data, { ack: true });
  return (await batch.commit(subject, rest.at(-1))).seq;
}

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
  for (let conflicts = 0; conflicts < MAX_TRIES; ) {
    const decision = decide(state, c);
    if ("rejected" in decision) return { accepted: false, conflicts, reason: decision.rejected, state };
    try {
      const seq = await append(js, atomic, c, state, decision);
      return { accepted: true, conflicts, events: decision.length, state: decision.reduce((s, e) => fold(s, e, seq), state) };
    } catch (err) {
      if (apiCode(err) === ApiCodes.StreamWrongLastSequence) {
        conflicts++;
        await delay(conflictPause.backoff(conflicts));
      } else if (!isTransient(err)) throw err;
      // A conflict, or no answer (the append may have been stored): read what came since, then decide again.
      const since = await load(js, jsm, c.account, state);
      if (since.commands.includes(c.id)) return { accepted: true, conflicts, events: decision.length, state: since.state };
      state = since.state;
    }
  }
  return { accepted: false, conflicts: MAX_TRIES, reason: `gave up after ${MAX_TRIES} conflicts`, state };
}
