// Sharing N partitions among the live workers, on every server version: a KV bucket whose max age is
// the lease. Each worker, every third of a lease:
//   1. renews member.<name>: the live workers are the member entries not yet aged out;
//   2. renews each partition it holds (lease.<p>), compare-and-set on the revision it wrote last: a
//      renewal that finds another revision means the lease ran out (the worker was paused or cut off)
//      and someone else took it: the partition is given up at once;
//   3. holds its fair share, ceil(N / live workers): it gives up the extras (after finishing what it
//      has in hand) when workers join, and takes free partitions (create: only if no one holds it)
//      when workers leave or die.
// A lease is held by one worker at a time (create and update are compare-and-set), but a paused
// worker learns it lost one only when it wakes: what it does meanwhile is fenced by state.ts.
import type { KV } from "@nats-io/kv";
import { ApiCodes, apiCode, type Logger, messageOf } from "@repo/kit";

export interface LeaseOptions {
  kv: KV;
  name: string;
  partitions: number;
  leaseMs: number;
  log: Logger;
  /** The worker holds `p` now: start reading it. */
  gained(p: number): Promise<void>;
  /** The worker no longer holds `p` (or is giving it up): stop reading it, finishing what is in hand. */
  lost(p: number): Promise<void>;
}

export interface Leases {
  /** The partitions held now. */
  held(): number[];
  /** Gives every partition up (lost(), then the lease is deleted) and leaves. */
  stop(): Promise<void>;
}

const lease = (p: number) => `lease.${p}`;
const isTaken = (err: unknown) => apiCode(err) === ApiCodes.StreamWrongLastSequence;

export function holdPartitions(o: LeaseOptions): Leases {
  const { kv, name, log } = o;
  const held = new Map<number, number>(); // partition -> the revision we wrote last
  let stopping = false;

  // Giving a partition up runs beside the lease rounds (stopping its reading waits for the event in
  // hand, up to a pull's expiry), so the other leases are renewed meanwhile.
  const leaving = new Set<Promise<void>>();
  const giveUp = (p: number, release: boolean) => {
    const revision = held.get(p);
    held.delete(p);
    const done = (async () => {
      await o.lost(p);
      if (release && revision !== undefined)
        await kv.delete(lease(p), { previousSeq: revision }).catch((err: unknown) => {
          if (!isTaken(err))
            log.warn({ worker: name, partition: p, err: messageOf(err) }, "could not release a lease: it runs out by itself");
        });
    })().catch((err: unknown) => log.error({ worker: name, partition: p, err: messageOf(err) }, "giving a partition up failed"));
    leaving.add(done);
    void done.finally(() => leaving.delete(done));
  };

  const tick = async () => {
    await kv.put(`member.${name}`, String(Date.now()));
    for (const [p, revision] of [...held]) {
      try {
        held.set(p, await kv.update(lease(p), name, revision));
      } catch (err) {
        if (!isTaken(err)) throw err; // not known: tried again next tick (the lease lives a while yet)
        log.warn({ worker: name, partition: p }, "lease lost (ran out while this worker was paused or cut off): partition given up");
        giveUp(p, false);
      }
    }
    // The live members: keys() lists the entries not deleted and not aged out.
    let members = 0;
    for await (const _ of await kv.keys("member.*")) members++;
    const fair = Math.ceil(o.partitions / Math.max(1, members));
    for (const p of [...held.keys()].sort((a, b) => b - a).slice(0, Math.max(0, held.size - fair))) {
      log.info({ worker: name, partition: p, members }, "more than a fair share: partition given up for a worker that joined");
      giveUp(p, true);
    }
    for (let p = 0; p < o.partitions && held.size < fair && !stopping; p++) {
      if (held.has(p)) continue;
      try {
        held.set(p, await kv.create(lease(p), name));
      } catch (err) {
        if (isTaken(err)) continue; // someone holds it
        throw err;
      }
      log.info({ worker: name, partition: p, members }, "partition taken");
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
    running = tick()
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
