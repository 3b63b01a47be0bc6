// Each key's state, and the fence that keeps a key's events in order: the state records the seq of
// the last event applied to it, and the next is applied only if it is the one after, by a
// compare-and-set on the entry's revision. Delivery is at least once, and a worker that was paused
// may wake up still holding an event another worker has since handled: whatever runs twice or late,
// each event changes its key's state once, and never before the one before it.
import { type KV, KvWatchInclude } from "@nats-io/kv";
import { ApiCodes, apiCode } from "@repo/kit";
import type { OrderEvent } from "./producer.js";

/** A key's state: the last event applied, how many, and the total of their amounts. */
export interface KeyState {
  seq: number;
  type: string;
  total: number;
}

/**
 * What became of an event: `applied` (its work ran and its key's state changed); `already` (its key's
 * state had it: a redelivery, or a late worker's copy; its work did not run, or ran in a race it lost);
 * `gap` (an earlier event of its key never came: it can never be applied in order).
 */
export type Applied = "applied" | "already" | "gap";

/** The demo's state change; replace with your own. Pure: it may run more than once for an event, only one result is kept. */
export const fold = (s: KeyState | undefined, e: OrderEvent): KeyState => ({ seq: e.seq, type: e.type, total: (s?.total ?? 0) + e.amount });

/** Another writer changed the entry first (on a clustered 2.12+ stream, also while its write is in flight). */
export const isRace = (err: unknown) =>
  apiCode(err) === ApiCodes.StreamWrongLastSequence || apiCode(err) === ApiCodes.WrongLastSequenceInProcess;

/** Runs `work` for `e` only if it is its key's next event, then records it: compare-and-set on the revision. */
export async function applyInOrder(kv: KV, e: OrderEvent, work: (e: OrderEvent) => Promise<void> = async () => {}): Promise<Applied> {
  for (let tries = 0; ; tries++) {
    const entry = await kv.get(e.key);
    const current = entry?.operation === "PUT" ? entry.json<KeyState>() : undefined;
    const last = current?.seq ?? 0;
    if (e.seq <= last) return "already";
    if (e.seq > last + 1) return "gap";
    if (tries === 0) await work(e); // at least once: a worker that loses the race below ran it too
    const next = JSON.stringify(fold(current, e));
    try {
      if (entry) await kv.update(e.key, next, entry.revision);
      else await kv.create(e.key, next);
      return "applied";
    } catch (err) {
      // Another worker changed it first (a late one, or a redelivery's): look again.
      if (!isRace(err) || tries >= 10) throw err;
    }
  }
}

/** Every key's state (for the demo's and the tests' accounting). */
export async function allStates(kv: KV): Promise<Map<string, KeyState>> {
  const out = new Map<string, KeyState>();
  const w = await kv.watch({ include: KvWatchInclude.LastValue, ignoreDeletes: true });
  const status = await kv.status();
  if (status.values === 0) {
    w.stop();
    return out;
  }
  for await (const e of w) {
    if (e.operation === "PUT") out.set(e.key, e.json<KeyState>());
    if (e.delta === 0) break;
  }
  w.stop();
  return out;
}
