// The projection: a read model (each account's balance) fed by a durable consumer. Each balance keeps
// the stream sequence of the last event it took, and an event at or below it is skipped: a restart, a
// redelivery or a crash between the update and the ack never counts an event twice.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, pull, type Serving } from "@repo/kit";
import { fold } from "./account.js";
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

export async function startProjection(o: ProjectionOptions): Promise<Serving> {
  const consumer = await jetstream(o.nc).consumers.get(STREAM, PROJECTION);
  const handle = async (m: JsMsg) => {
    const account = accountOf(m.subject);
    const before = await readBalance(o.balances, account);
    const counted = m.seq > before.seq;
    if (counted) {
      const state = eventsOf(parseStored(m.data)).reduce((s, e) => fold(s, e, m.seq), {
        open: true,
        balance: before.balance,
        version: before.seq,
      });
      await o.balances.put(account, JSON.stringify({ balance: state.balance, seq: m.seq } satisfies Balance));
    }
    await o.beforeAck?.(m);
    await m.ackAck();
    o.onEvent?.(account, m.seq, counted);
  };
  return pull(consumer, handle, { nc: o.nc, log: o.log, who: { projection: PROJECTION }, batch: 64 });
}
