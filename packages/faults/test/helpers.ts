import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { replay } from "@patterns/ordered-replay/replayer";
import { encodeJob, type Outgoing } from "@patterns/work-queue/producer";
import type { RetryPolicy } from "@patterns/work-queue/setup";
import { type NatsServer, type ServerOptions, sleep, startServer, waitFor } from "@repo/harness";
import type { Logger } from "pino";
import { afterEach } from "vitest";

/**
 * For tests that each start a nats-server of their own (they kill, halt and restart it): start() gives
 * it; after the test, the worker processes and connections put in `processes` and `connections` are
 * killed and closed, then the server stops.
 */
export function serverPerTest() {
  let server: NatsServer | undefined;
  const processes: WorkerProcess[] = [];
  const connections: NatsConnection[] = [];
  afterEach(async () => {
    for (const w of processes.splice(0)) await w.kill();
    for (const c of connections.splice(0)) if (!c.isClosed()) await c.close();
    await server?.stop();
    server = undefined;
  });
  return { start: async (opts?: ServerOptions) => (server = await startServer(opts)), processes, connections };
}

/** What worker processes reported: job id -> how many times processed / dead-lettered. */
export class Ledger {
  processed = new Map<string, number>();
  deadLettered = new Map<string, number>();
  record(line: { processed?: string; dead_lettered?: string }) {
    if (line.processed) this.processed.set(line.processed, (this.processed.get(line.processed) ?? 0) + 1);
    if (line.dead_lettered) this.deadLettered.set(line.dead_lettered, (this.deadLettered.get(line.dead_lettered) ?? 0) + 1);
  }
  accounted(): number {
    return new Set([...this.processed.keys(), ...this.deadLettered.keys()]).size;
  }
  inBoth(): string[] {
    return [...this.processed.keys()].filter((id) => this.deadLettered.has(id));
  }
}

export interface WorkerProcess {
  name: string;
  child: ChildProcess;
  ready: Promise<void>;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export function spawnWorker(name: string, url: string, retry: RetryPolicy, ledger: Ledger): WorkerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "../src/worker-process.ts")], {
    env: { ...process.env, NATS_URL: url, WORKER_NAME: name, BACKOFF_MS: retry.backoffMs.join(","), MAX_DELIVER: String(retry.maxDeliver) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let resolveReady: () => void = () => {};
  const ready = new Promise<void>((r) => (resolveReady = r));
  createInterface({ input: child.stdout! }).on("line", (l) => {
    const line = JSON.parse(l) as { ready?: string; processed?: string; dead_lettered?: string };
    if (line.ready) resolveReady();
    else ledger.record(line);
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const signal = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return { name, child, ready, kill: () => signal("SIGKILL"), stop: () => signal("SIGTERM") };
}

/** n jobs, every `poisonEvery`-th one a poison job that always fails. */
export function jobs(prefix: string, n: number, poisonEvery = 50): Outgoing[] {
  return Array.from({ length: n }, (_, i) => encodeJob({ id: `${prefix}-${i}`, task: i % poisonEvery === 7 ? "poison" : "resize" }));
}

/** The R3 stream's leader, by server name. */
export async function streamLeader(jsm: JetStreamManager, stream: string): Promise<string> {
  const info = await jsm.streams.info(stream);
  if (info.config.num_replicas !== 3) throw new Error(`${stream} has ${info.config.num_replicas} replicas, not 3`);
  return info.cluster!.leader!;
}

/** Waits until both followers of the R3 stream are current: a restarted or reconnected node caught up. */
export async function replicasCurrent(jsm: JetStreamManager, stream: string): Promise<void> {
  await waitFor(
    `${stream} replicas current`,
    async () => {
      const info = await jsm.streams.info(stream).catch(() => undefined);
      const replicas = info?.cluster?.replicas ?? [];
      return replicas.length === 2 && replicas.every((r) => r.current && !r.offline);
    },
    { timeoutMs: 60_000, everyMs: 250 },
  );
}

/**
 * A new R3 stream's first publish can see "no responders" while its leader's interest reaches this
 * client's node: tries `publish` (one message) every 250 ms for up to 10 s.
 */
export async function firstAccepted(what: string, publish: () => Promise<unknown>): Promise<void> {
  await waitFor(
    `the new R3 stream to accept ${what}`,
    () =>
      publish().then(
        () => true,
        () => false,
      ),
    { timeoutMs: 10_000, everyMs: 250 },
  );
}

/** Replays the ordered-replay ledger from the start, recording each sequence; a short pause every 100 events so a fault lands mid-replay. */
export function replaySeqs(nc: NatsConnection, name: string, log: Logger): { seqs: number[]; done: Promise<unknown> } {
  const seqs: number[] = [];
  const done = replay({
    nc,
    log,
    name,
    from: "start",
    handler: async (e) => {
      seqs.push(e.seq);
      if (e.seq % 100 === 0) await sleep(25);
    },
  });
  return { seqs, done };
}
