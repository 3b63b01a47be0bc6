// What every scenario shares: a nats-server on its own store, worker processes from the pool, and the
// faults a schedule can inject into them. The faults, as steps:
//   kill:    SIGKILL a worker process (its jobs in hand come back after ack_wait); a fresh one replaces it
//   pause:   SIGSTOP a worker past ack_wait, then SIGCONT: it wakes holding messages others have taken
//   close:   a worker's connection closes (a network fault); it connects again
//   restart: SIGKILL nats-server, start it again on the same store
//   wait:    let things run
// With CHAOS_CLUSTER=1 (`pnpm chaos <pattern> --cluster`) the server is a 3-node cluster and the
// streams R3 (NATS_REPLICAS=3), and the server's faults are a node's:
//   restart: SIGKILL node n (the leader of a given stream one time in three), start it again on its store
//   isolate: cut node n from the other nodes and from its clients for 1-5 s (they stall) or 10-20 s
//            (its clients move to another node, and a leader it held is replaced), then heal
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type NatsCluster, type NatsServer, sleep, startCluster, startServer } from "@repo/harness";
import fc from "fast-check";
import type { Line, Pool, Proc } from "./pool.js";

export type Fault =
  | { op: "kill"; worker: number }
  | { op: "pause"; worker: number; ms: number }
  | { op: "close"; worker: number }
  | { op: "restart"; node?: number }
  | { op: "isolate"; node: number; ms: number }
  | { op: "wait"; ms: number };

/** A 3-node cluster and R3 streams (pnpm chaos --cluster), read when the scenarios' steps are made. */
export const onCluster = () => process.env.CHAOS_CLUSTER === "1";
const NODES = 3;

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
    ...(onCluster()
      ? [
          { weight: 1, arbitrary: fc.record({ op: fc.constant("restart" as const), node: fc.integer({ min: 0, max: NODES - 1 }) }) },
          {
            weight: 1,
            arbitrary: fc.record({
              op: fc.constant("isolate" as const),
              node: fc.integer({ min: 0, max: NODES - 1 }),
              // Short (its clients stall, then move) or past a leader's election (4-9 s without
              // heartbeats) and its giving up (10 s without a quorum): a new leader on the other side.
              ms: fc.oneof(fc.integer({ min: 1_000, max: 5_000 }), fc.integer({ min: 10_000, max: 20_000 })),
            }),
          },
        ]
      : [{ weight: 1, arbitrary: fc.record({ op: fc.constant("restart" as const) }) }]),
    { weight: 2, arbitrary: fc.record({ op: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 800 }) }) },
  ];
}

export const isFault = (s: { op: string }): s is Fault => ["kill", "pause", "close", "restart", "isolate", "wait"].includes(s.op);

export interface Rig {
  /** The server's URL (a cluster's: its nodes', comma-separated). */
  url: string;
  /** The schedule's own connection (setup, publishes, the model's reads): it reconnects after a restart. */
  nc: NatsConnection;
  faults: { kill: number; pause: number; close: number; restart: number; isolate: number };
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
    options: (worker: number) => Line;
    setup: (nc: NatsConnection) => Promise<void>;
    onLine: (l: Line) => void;
  },
): Promise<Rig> {
  // One server, or a cluster whose nodes and clients go through links a fault can cut.
  const cluster: NatsCluster | undefined = onCluster() ? await startCluster({ partitions: true }) : undefined;
  const server: NatsServer | undefined = cluster ? undefined : await startServer();
  const url = cluster?.url ?? server!.url;
  const stopServer = () => (cluster ? cluster.stop() : server!.stop());
  const nc = await connect({
    servers: url.split(","),
    noRandomize: true, // the same node first each time: a replayed fault meets the same clients there
    reconnectTimeWait: 100,
    maxReconnectAttempts: -1,
    timeout: 2_000,
    // An isolated node's clients notice within seconds and go to another.
    pingInterval: 1_000,
    maxPingOut: 3,
  }).catch(async (err: unknown) => {
    await stopServer();
    throw err;
  });
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const workers: Proc[] = [];
  let generation = 0;
  const spawn = async (i: number) => {
    const p = await pool.start(`w${i}-${generation++}`, o.role, { url, ...o.options(i) }, o.onLine);
    workers[i] = p;
    await p.ready;
  };
  const close = async () => {
    for (const w of workers) w?.signal("SIGKILL");
    await Promise.all(workers.map((w) => w?.exited));
    await nc.close().catch(() => undefined);
    await stopServer();
  };
  try {
    await o.setup(nc);
    await Promise.all(Array.from({ length: o.workers }, (_, i) => spawn(i)));
  } catch (err) {
    await close();
    throw err;
  }
  const faults = { kill: 0, pause: 0, close: 0, restart: 0, isolate: 0 };
  // Until JetStream answers again (it recovers its streams first): the schedule goes on from there.
  const answering = () => settle(15_000, async () => Boolean(await jsm.getAccountInfo()));
  // A cluster that does not heal after a fault fails the run (said as such), rather than letting a
  // model pass on publishes that were all refused.
  // Healed means every stream (the KV buckets' too) has a leader again: the model reads them after
  // the last step, and a read of a stream still electing one times out.
  const healed = async () => {
    await cluster!.ready(30_000);
    const led = await settle(30_000, async () => {
      for await (const si of jsm.streams.list()) if (!si.cluster?.leader) return false;
      return true;
    });
    if (!led) throw new Error("a stream had no leader 30 s after the cluster healed");
  };
  return {
    url,
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
      if (f.op === "restart" && cluster) {
        const node = cluster.nodes[f.node ?? 0]!;
        await node.kill();
        await node.restart();
        await healed();
        return;
      }
      if (f.op === "restart") {
        await server!.kill();
        await server!.restart();
        await answering();
        return;
      }
      if (f.op === "isolate") {
        if (!cluster?.net) return; // a schedule made for a cluster, replayed on one server
        cluster.net.isolate(cluster.nodes[f.node]!.name);
        await sleep(f.ms);
        cluster.net.healAll();
        await healed();
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
