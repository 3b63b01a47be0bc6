// Sharing N partitions among the live workers, on every server version: a KV bucket whose max age is
// the lease. Each worker, every third of a lease:
//   1. renews each partition it holds (lease.<p>), compare-and-set on the revision it wrote last. A
//      renewal that finds another revision means the lease ran out (the worker was paused or cut off)
//      and someone else took it; one that has not succeeded for two thirds of a lease soon may be:
//      either way the partition is given up at once. So is one whose reading stopped by itself;
//   2. renews member.<name>: the live workers are the member entries not deleted nor aged out;
//   3. holds its share: the live workers sorted by name, the first N mod m hold one more than N / m
//      (rounded down). It gives extras up (after its event in hand) when workers join, and takes free
//      partitions (create: only if no one holds it) when workers leave or die.
// A lease is held by one worker at a time (create and update are compare-and-set), but a paused
// worker learns it lost one only when it wakes: what it does meanwhile is fenced by state.ts.
import type { KV } from "@nats-io/kv";
import { type Logger, messageOf, type Stoppable } from "@repo/kit";
import { isRace } from "./state.js";

export interface LeaseOptions {
  kv: KV;
  name: string;
  partitions: number;
  leaseMs: number;
  log: Logger;
  /** The worker holds `p` now: start reading it. */
  gained(p: number): Promise<void>;
  /** Why the reading of `p` stopped by itself, if it did (the partition is then given up). */
  reading(p: number): string | undefined;
  /** The worker no longer holds `p` (or is giving it up): stop reading it, finishing what is in hand. */
  lost(p: number): Promise<void>;
}

/** stop() gives every partition up (lost(), then the lease is deleted) and leaves. */
export interface Leases extends Stoppable {
  /** The partitions held now. */
  held(): number[];
}

const lease = (p: number) => `lease.${p}`;

/** How many partitions the worker at `rank` (0-based, by name) of `members` holds. */
export const shareOf = (partitions: number, members: number, rank: number) =>
  Math.floor(partitions / members) + (rank < partitions % members ? 1 : 0);

export function holdPartitions(o: LeaseOptions): Leases {
  const { kv, name, log } = o;
  const held = new Map<number, { revision: number; renewed: number }>();
  let stopping = false;

  // Giving a partition up runs beside the lease rounds (stopping its reading waits for the event in
  // hand), so the other leases are renewed meanwhile. lost() takes the reading before any await.
  const leaving = new Set<Promise<void>>();
  const giveUp = (p: number, release: boolean) => {
    const revision = held.get(p)?.revision;
    held.delete(p);
    const done = (async () => {
      await o.lost(p);
      if (release && revision !== undefined)
        await kv.delete(lease(p), { previousSeq: revision }).catch((err: unknown) => {
          if (!isRace(err))
            log.warn({ worker: name, partition: p, err: messageOf(err) }, "could not release a lease: it runs out by itself");
        });
    })().catch((err: unknown) => log.error({ worker: name, partition: p, err: messageOf(err) }, "giving a partition up failed"));
    leaving.add(done);
    void done.finally(() => leaving.delete(done));
  };

  const renew = async (p: number, at: { revision: number; renewed: number }) => {
    const stopped = o.reading(p);
    if (stopped) {
      log.error({ worker: name, partition: p, why: stopped }, "its reading stopped: partition given up");
      return giveUp(p, true);
    }
    const sent = Date.now(); // the lease runs from the write, which is no later than this
    try {
      held.set(p, { revision: await kv.update(lease(p), name, at.revision), renewed: sent });
    } catch (err) {
      if (isRace(err)) {
        log.warn({ worker: name, partition: p }, "lease lost (ran out while this worker was paused or cut off): partition given up");
        return giveUp(p, false);
      }
      // Not known (a timeout): it may have been written. Past two thirds of a lease since the last one
      // known, stop, before the lease can run out and another worker take it.
      if (Date.now() - at.renewed > (2 * o.leaseMs) / 3) {
        log.warn({ worker: name, partition: p, err: messageOf(err) }, "lease not renewed in time: partition given up");
        return giveUp(p, false);
      }
      log.warn({ worker: name, partition: p, err: messageOf(err) }, "lease renewal failed; trying again");
    }
  };

  const round = async () => {
    await Promise.all([...held].map(([p, at]) => renew(p, at)));
    await kv.put(`member.${name}`, String(Date.now()));
    const members: string[] = [];
    for await (const key of await kv.keys("member.*")) members.push(key.slice("member.".length));
    if (!members.includes(name)) members.push(name);
    members.sort();
    const share = shareOf(o.partitions, members.length, members.indexOf(name));
    for (const p of [...held.keys()].sort((a, b) => b - a).slice(0, Math.max(0, held.size - share))) {
      log.info({ worker: name, partition: p, members: members.length }, "more than its share: partition given up");
      giveUp(p, true);
    }
    for (let p = 0; p < o.partitions && held.size < share && !stopping; p++) {
      if (held.has(p)) continue;
      let revision: number;
      try {
        revision = await kv.create(lease(p), name);
      } catch (err) {
        if (isRace(err)) continue; // someone holds it
        throw err;
      }
      held.set(p, { revision, renewed: Date.now() });
      log.info({ worker: name, partition: p, members: members.length }, "partition taken");
      try {
        await o.gained(p);
      } catch (err) {
        giveUp(p, true); // not read: not held either
        throw err;
      }
    }
  };

  const every = Math.max(50, Math.floor(o.leaseMs / 3));
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = Promise.resolve();
  const loop = () => {
    running = round()
      .catch((err: unknown) => log.warn({ worker: name, err: messageOf(err) }, "lease round failed; trying again"))
      .finally(() => {
        if (!stopping) timer = setTimeout(loop, every);
      });
  };
  loop();

  return {
    held: () => [...held.keys()].sort((a, b) => a - b),
    async stop() {
      stopping = true;
      clearTimeout(timer);
      await running;
      for (const p of [...held.keys()]) giveUp(p, true);
      await Promise.all(leaving);
      await kv
        .delete(`member.${name}`)
        .catch((err: unknown) => log.debug({ worker: name, err: messageOf(err) }, "membership left to age out"));
    },
  };
}
