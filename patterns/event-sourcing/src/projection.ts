// The projection: a read model (each account's balance) fed by a durable consumer. Each balance keeps
// the stream sequence of the last event it took, and an event at or below it is skipped: a restart, a
// redelivery or a crash between the update and the ack never counts an event twice. An event is
// counted only when no earlier event of its account is still uncounted, so one whose update failed is
// never overtaken by a later one; and the update is conditional on the revision it read, so several
// instances on the one consumer never overwrite each other's counts. A malformed event is passed over
// (its seq recorded, the balance unchanged) and ended with the reason.
import { type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { type Logger, MalformedPayload, nextStored, pull, type Serving } from "@repo/kit";
import { type AccountEvent, fold } from "./account.js";
import { accountOf, PROJECTION, STREAM } from "./setup.js";
import { eventsOf, parseStored } from "./store.js";

export interface Balance {
  balance: number;
  /** Stream sequence of the last event counted. */
  seq: number;
}

export async function readBalance(balances: KV, account: string): Promise<Balance> {
  const e = await balances.get(account);
  return e?.operation === "PUT" ? e.json<Balance>() : { balance: 0, seq: 0 };
}

export interface ProjectionOptions {
  nc: NatsConnection;
  balances: KV;
  log: Logger;
  /** Runs after the read model is updated and before the ack: the tests put crashes here. */
  beforeAck?: (m: JsMsg) => Promise<void>;
  onEvent?: (account: string, seq: number, counted: boolean) => void;
}

/** An earlier event of the account held by another instance is counted within milliseconds: wait this long for it. */
const WAIT_MS = 1_000;
/** An event that cannot be counted yet (its earlier one is not, or another instance won the update) comes back after this. */
const RETRY_MS = 200;

/** Its account's earlier event is not counted yet: the event comes back, and the account's later ones wait behind it. */
class NotItsTurn extends Error {}

export async function startProjection(o: ProjectionOptions): Promise<Serving> {
  const js = jetstream(o.nc);
  const jsm = await jetstreamManager(o.nc);
  const consumer = await js.consumers.get(STREAM, PROJECTION);
  /** The account's balance entry once `m` is the account's next event to count (or counted already); undefined if not soon. */
  const turnOf = async (m: JsMsg, account: string) => {
    for (const until = Date.now() + WAIT_MS; Date.now() < until; await delay(10)) {
      const entry = await o.balances.get(account);
      const before: Balance = entry?.operation === "PUT" ? entry.json<Balance>() : { balance: 0, seq: 0 };
      if (m.seq <= before.seq) return { entry, before };
      // The account's first event after the one counted last must be this one.
      const earlier = await nextStored(jsm, STREAM, before.seq + 1, m.subject);
      if (!earlier || earlier.seq >= m.seq) return { entry, before };
    }
    return undefined;
  };
  const handle = async (m: JsMsg) => {
    const account = accountOf(m.subject);
    const turn = await turnOf(m, account);
    if (!turn) throw new NotItsTurn(`an earlier event of ${account} is not counted yet`);
    const { entry, before } = turn;
    const counted = m.seq > before.seq;
    // A malformed event (written around the command side) is passed over: its seq is recorded with the
    // balance unchanged, so the account's later events are not held behind it, and pull() ends it with
    // the reason (+TERM), logged.
    let events: AccountEvent[] = [];
    let malformed: MalformedPayload | undefined;
    try {
      events = eventsOf(parseStored(m.data));
    } catch (err) {
      if (!(err instanceof MalformedPayload)) throw err;
      malformed = err;
    }
    if (counted) {
      const state = events.reduce((s, e) => fold(s, e, m.seq), { open: true, balance: before.balance, version: before.seq });
      const value = JSON.stringify({ balance: state.balance, seq: m.seq } satisfies Balance);
      // Fails with "wrong last sequence" when another instance updated the balance since it was read
      // (or the read came from a lagging replica): the event comes back and is read afresh.
      await (entry?.operation === "PUT" ? o.balances.update(account, value, entry.revision) : o.balances.create(account, value));
    }
    if (malformed) {
      o.onEvent?.(account, m.seq, false);
      throw malformed;
    }
    await o.beforeAck?.(m);
    // The count is stored: an ack whose answer is lost (a reconnect) must not hold the account. If
    // the ack itself was lost, the event comes back and is skipped by its sequence.
    await m.ackAck().catch(() => false);
    o.onEvent?.(account, m.seq, counted);
  };
  // An event that failed (not its turn, an update lost to another instance) is handed back and read
  // afresh in RETRY_MS, and holds its account (keyOf): the account's later events in hand go back at
  // once behind it rather than each waiting WAIT_MS for it, and are then counted lowest first.
  return pull(consumer, handle, {
    nc: o.nc,
    log: o.log,
    who: { projection: PROJECTION },
    batch: 64,
    retryMs: RETRY_MS,
    keyOf: (m) => accountOf(m.subject),
  });
}
