// What every scenario shares: a nats-server on its own store, worker processes from the pool, and the
// faults a schedule can inject into them. The faults, as steps:
//   kill:    SIGKILL a worker process (its jobs in hand come back after ack_wait); a fresh one replaces it
//   pause:   SIGSTOP a worker past ack_wait, then SIGCONT: it wakes holding messages others have taken
//   close:   a worker's connection closes (a network fault); it connects again
//   restart: SIGKILL nats-server, start it again on the same store
//   wait:    let things run
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type NatsServer, sleep, startServer } from "@repo/harness";
import fc from "fast-check";
import type { Line, Pool, Proc } from "./pool.js";

export type Fault =
  | { op: "kill"; worker: number }
  | { op: "pause"; worker: number; ms: number }
  | { op: "close"; worker: number }
  | { op: "restart" }
  | { op: "wait"; ms: number };

/** The fault steps for `workers` worker processes, weighted for fast-check's oneof; a pause outlasts `ackWaitMs`. */
export function faultSteps(workers: number, ackWaitMs: number) {
  const worker = fc.integer({ min: 0, max: workers - 1 });
  return [
    { weight: 2, arbitrary: fc.record({ op: fc.constant("kill" as const), worker }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("pause" as const),
        worker,
        ms: fc.integer({ min: ackWaitMs + 200, max: ackWaitMs * 2 + 500 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("close" as const), worker }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("restart" as const) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 800 }) }) },
  ];
}

export const isFault = (s: { op: string }): s is Fault => ["kill", "pause", "close", "restart", "wait"].includes(s.op);

export interface Rig {
  server: NatsServer;
  /** The schedule's own connection (setup, publishes, the model's reads): it reconnects after a restart. */
  nc: NatsConnection;
  faults: { kill: number; pause: number; close: number; restart: number };
  apply(f: Fault): Promise<void>;
  /** A line to worker `i`'s process (the one running now: a killed worker's replacement); returns that process. */
  send(i: number, line: Line): Proc;
  close(): Promise<void>;
}

export async function startRig(
  pool: Pool,
  o: {
    role: string;
    workers: number;
    options: (server: NatsServer, worker: number) => Line;
    setup: (nc: NatsConnection) => Promise<void>;
    onLine: (l: Line) => void;
  },
): Promise<Rig> {
  const server = await startServer();
  const nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1, timeout: 2_000 }).catch(
    async (err: unknown) => {
      await server.stop();
      throw err;
    },
  );
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const workers: Proc[] = [];
  let generation = 0;
  const spawn = async (i: number) => {
    const p = await pool.start(`w${i}-${generation++}`, o.role, { url: server.url, ...o.options(server, i) }, o.onLine);
    workers[i] = p;
    await p.ready;
  };
  const close = async () => {
    for (const w of workers) w?.signal("SIGKILL");
    await Promise.all(workers.map((w) => w?.exited));
    await nc.close().catch(() => undefined);
    await server.stop();
  };
  try {
    await o.setup(nc);
    await Promise.all(Array.from({ length: o.workers }, (_, i) => spawn(i)));
  } catch (err) {
    await close();
    throw err;
  }
  const faults = { kill: 0, pause: 0, close: 0, restart: 0 };
  return {
    server,
    nc,
    faults,
    close,
    send: (i, line) => {
      workers[i]!.send(line);
      return workers[i]!;
    },
    async apply(f) {
      if (f.op === "wait") return sleep(f.ms);
      faults[f.op]++;
      if (f.op === "restart") {
        await server.kill();
        await server.restart();
        // Until JetStream answers again (it recovers its streams first): the schedule goes on from there.
        await settle(15_000, async () => Boolean(await jsm.getAccountInfo()));
        return;
      }
      const w = workers[f.worker]!;
      if (f.op === "kill") {
        w.signal("SIGKILL");
        await w.exited;
        return spawn(f.worker);
      }
      if (f.op === "close") return w.send({ cmd: "close" });
      w.signal("SIGSTOP");
      await sleep(f.ms);
      w.signal("SIGCONT");
    },
  };
}

/** Polls `done` every 250 ms for up to `ms`; true once it held. */
export async function settle(ms: number, done: () => Promise<boolean>): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(250)) if (await done().catch(() => false)) return true;
  return false;
}

/** A schedule: `first` (an operation, so there is something to break), then up to 7 more steps. */
export const schedule = <S>(first: fc.Arbitrary<S>, step: fc.Arbitrary<S>): fc.Arbitrary<S[]> =>
  fc.tuple(first, fc.array(step, { maxLength: 7 })).map(([f, rest]) => [f, ...rest]);
