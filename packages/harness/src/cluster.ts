// A 3-node JetStream cluster on loopback: routes between the three, a store dir each, a monitoring
// port each (its /healthz says when JetStream is ready). Any node can be stopped, killed with SIGKILL
// and restarted on its store dir.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findServerBinary } from "./binary.js";
import { type Link, tcpLink } from "./link.js";
import { reservePorts, type ServerOptions, serverProcess, syncLines } from "./server.js";

export interface ClusterNode {
  name: string;
  url: string;
  port: number;
  halt(): Promise<void>;
  kill(): Promise<void>;
  restart(): Promise<void>;
  running(): boolean;
  log(): string;
}

export interface NatsCluster {
  /** All client URLs, comma-separated: the form NATS_URL takes. */
  url: string;
  version: string;
  nodes: ClusterNode[];
  /** The node by server name ("n1", "n2", "n3"). */
  node(name: string): ClusterNode;
  /** Resolves when every running node is healthy and they agree on a running JetStream meta leader. */
  ready(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
  /** With `partitions: true`: the network between the nodes, and between each node and its clients. */
  net?: Network;
}

/** Cuts and heals links (see link.ts: a cut holds traffic like a partition, it does not reset it). */
export interface Network {
  /** Cuts the routes between two nodes, both ways. */
  cut(a: string, b: string): void;
  heal(a: string, b: string): void;
  /** Cuts a node from the other nodes and from its clients (they then fail over to the others). */
  isolate(name: string): void;
  healAll(): void;
}

/**
 * The JetStream meta group as this node sees it, once it is healthy and knows a leader. /healthz alone
 * says OK before a node has joined the meta group, and then the JetStream API may not answer yet.
 */
interface MetaView {
  leader?: string;
  replicas?: { name: string; current: boolean }[];
}

async function metaView(httpPort: number): Promise<MetaView | undefined> {
  try {
    const health = await fetch(`http://127.0.0.1:${httpPort}/healthz`, { signal: AbortSignal.timeout(1_000) });
    if (!health.ok) return undefined;
    const jsz = (await (await fetch(`http://127.0.0.1:${httpPort}/jsz`, { signal: AbortSignal.timeout(1_000) })).json()) as {
      meta_cluster?: MetaView;
    };
    return jsz.meta_cluster?.leader ? jsz.meta_cluster : undefined;
  } catch {
    return undefined;
  }
}

/** The meta group formed, but without every node. */
export class MetaIncomplete extends Error {}

/**
 * Resolves when every running node is healthy and they agree on a running JetStream meta leader whose
 * view lists every other running node as current (only the leader's view is reliable). A node the
 * leader does not know yet cannot take a replica ("no suitable peers for placement", seen on 2.10.27).
 * After half the time, agreeing on a leader is enough, unless `whole` (then it throws MetaIncomplete).
 */
export async function metaReady(
  nodes: { name: string; http: number; running(): boolean }[],
  timeoutMs = 30_000,
  whole = false,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const up = nodes.filter((n) => n.running());
    const views = await Promise.all(up.map((n) => metaView(n.http)));
    const leader = views[0]?.leader;
    const leaderView = views[up.findIndex((n) => n.name === leader)];
    const agreed = !!leader && views.every((v) => v?.leader === leader) && !!leaderView;
    const current = up.filter((n) => n.name !== leader).every((n) => leaderView?.replicas?.some((r) => r.name === n.name && r.current));
    if (agreed && (current || (!whole && Date.now() > deadline - timeoutMs / 2))) return;
    if (Date.now() > deadline) {
      if (agreed) throw new MetaIncomplete(`the JetStream meta group did not take in all ${up.length} nodes within ${timeoutMs}ms`);
      throw new Error(`cluster not healthy within ${timeoutMs}ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a cluster with `start` up to three times (`last` is true on the third), again whenever it throws
 * MetaIncomplete: on 2.10.27 about one start in twenty-five (7 of 168 here) bootstraps a JetStream meta
 * group of two of the three nodes (/jsz: cluster_size 2, the leader's view lists one other node) and does
 * not take in the third, so no R3 stream can ever be placed ("no suitable peers for placement"); a fresh
 * start, on fresh store dirs, forms the whole group. `start` stops its nodes before it throws.
 */
export async function untilWhole<T>(start: (last: boolean) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(attempt === 3);
    } catch (err) {
      if (!(err instanceof MetaIncomplete) || attempt === 3) throw err;
    }
  }
}

/** Starts a cluster of `size` nodes (startOnce), again if its meta group forms without one (untilWhole). */
export function startCluster(opts: ServerOptions & { size?: number; partitions?: boolean } = {}): Promise<NatsCluster> {
  return untilWhole((last) => startOnce(opts, last));
}

/**
 * Starts a cluster of `size` nodes. With `partitions`, every route goes through a link per direction
 * and every client through a link per node (link.ts), so a test can cut any of them; the nodes then
 * advertise neither their real route address (a closed port instead: no direct implicit route around
 * a cut) nor the other nodes' client addresses (clients stay on the links).
 */
async function startOnce(opts: ServerOptions & { size?: number; partitions?: boolean }, last: boolean): Promise<NatsCluster> {
  const bin = findServerBinary(opts.version);
  const size = opts.size ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "jsp-cluster-"));
  // Held until the links listen, so that no link takes a node's port.
  const reserved = await reservePorts(3 * size + 1);
  const free = [...reserved.ports];
  const ports = Array.from({ length: size }, () => ({ client: free.pop()!, route: free.pop()!, http: free.pop()! }));
  const nowhere = free.pop()!;
  const names = ports.map((_, i) => `n${i + 1}`);
  // links.get("n1>n2"): n1's route to n2; links.get("n1"): n1's clients.
  const links = new Map<string, Link>();
  if (opts.partitions) {
    for (const [i, a] of names.entries()) {
      links.set(a, await tcpLink(ports[i]!.client));
      for (const [j, b] of names.entries()) if (i !== j) links.set(`${a}>${b}`, await tcpLink(ports[j]!.route));
    }
  }
  await reserved.release();
  const procs = ports.map((p, i) => {
    const name = names[i]!;
    const routes = opts.partitions
      ? names.filter((b) => b !== name).map((b) => `nats-route://127.0.0.1:${links.get(`${name}>${b}`)!.port}`)
      : ports.map((q) => `nats-route://127.0.0.1:${q.route}`);
    const spec = {
      base: "cluster.conf" as const,
      extra: [syncLines(bin, opts.sync), opts.config ?? ""].join("\n"),
      flags: ["--name", name, "--http_port", String(p.http), "--store_dir", join(dir, name, "store")]
        .concat(["--cluster", `nats://127.0.0.1:${p.route}`, "--routes", routes.join(",")])
        .concat(opts.partitions ? ["--cluster_advertise", `127.0.0.1:${nowhere}`, "--no_advertise"] : []),
    };
    const port = opts.partitions ? links.get(name)!.port : p.client;
    return { name, port, http: p.http, proc: serverProcess(bin, join(dir, name), p.client, spec) };
  });

  const ready = (timeoutMs = 30_000, whole = false) =>
    metaReady(
      procs.map((n) => ({ name: n.name, http: n.http, running: n.proc.running })),
      timeoutMs,
      whole,
    );

  const stop = async () => {
    for (const l of links.values()) l.heal(); // a held connection must not keep a server from stopping
    await Promise.all(procs.map((n) => n.proc.halt("SIGTERM")));
    await Promise.all([...links.values()].map((l) => l.close()));
    rmSync(dir, { recursive: true, force: true });
  };
  const link = (key: string) => {
    const l = links.get(key);
    if (!l) throw new Error(`no link ${key}: start the cluster with { partitions: true }`);
    return l;
  };
  const routesOf = (a: string, b: string) => [link(`${a}>${b}`), link(`${b}>${a}`)];
  const net: Network | undefined = opts.partitions
    ? {
        cut(a, b) {
          for (const l of routesOf(a, b)) l.cut();
        },
        heal(a, b) {
          for (const l of routesOf(a, b)) l.heal();
        },
        isolate(name) {
          for (const b of names) if (b !== name) this.cut(name, b);
          link(name).cut();
        },
        healAll() {
          for (const l of links.values()) l.heal();
        },
      }
    : undefined;

  try {
    await Promise.all(procs.map((n) => n.proc.start()));
    // Whole: every node in the meta group within 10 s (it takes under a second when it forms at all).
    await (last ? ready() : ready(10_000, true));
  } catch (err) {
    await stop();
    throw err;
  }

  const nodes: ClusterNode[] = procs.map((n) => ({
    name: n.name,
    url: `nats://127.0.0.1:${n.port}`,
    port: n.port,
    halt: () => n.proc.halt("SIGTERM"),
    kill: () => n.proc.halt("SIGKILL"),
    restart: () => n.proc.restart(),
    running: n.proc.running,
    log: n.proc.log,
  }));
  return {
    url: nodes.map((n) => n.url).join(","),
    version: bin.version,
    nodes,
    node: (name) => {
      const found = nodes.find((n) => n.name === name);
      if (!found) throw new Error(`no node ${name} (have ${nodes.map((n) => n.name).join(", ")})`);
      return found;
    },
    ready,
    stop,
    net,
  };
}
