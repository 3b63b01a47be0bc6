// What every benchmark shares: the result record, the context it runs in, and the two measurements.
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";

export interface Result {
  name: string;
  what: string;
  count: number;
  seconds: number;
  rate: number;
  /** The baseline this is a ratio of, and the ratio. */
  of?: string;
  ratio?: number;
  /** The goal for the ratio (at least this), when there is one. */
  goal?: number;
  rssMb?: number[];
  /** The goal for client memory: the RSS samples within this fraction of each other (0.15 = 15%). */
  rssFlat?: number;
  /** Latency from publish to handler start, in ms, at `offered` msg/s (the latency benchmarks). */
  latency?: Latency;
}

export interface Latency {
  offered: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

/** Each goal of a result and whether it is met: the ratio's and the memory's. */
export function judged(r: Result): { goal: string; met: boolean }[] {
  const out: { goal: string; met: boolean }[] = [];
  if (r.goal !== undefined) out.push({ goal: `≥ ${r.goal}× ${r.of}`, met: r.ratio !== undefined && r.ratio >= r.goal });
  if (r.rssFlat !== undefined && r.rssMb && r.rssMb.length > 1) {
    const spread = Math.max(...r.rssMb) / Math.min(...r.rssMb) - 1;
    out.push({ goal: `RSS flat (±${Math.round(r.rssFlat * 100)}%)`, met: spread <= r.rssFlat });
  }
  return out;
}

export interface Context {
  nc: NatsConnection;
  url: string;
  quick: boolean;
  n: number;
  /** Rates measured so far, by name. */
  rates: Map<string, number>;
  record(r: Omit<Result, "rate" | "ratio"> & { ratioOf?: string }): Result;
  /** Notes a benchmark that did not account for every message (the run then exits 1). */
  expect(what: string, got: number, wanted: number): void;
}

/** What a benchmark run by alone.ts in a process of its own reports on its one line of stdout. */
export interface AloneReport extends Sample {
  rssMb: number[];
  problems: { what: string; got: number; wanted: number }[];
}

/**
 * Runs benchmark `name` of alone.ts over `count` messages in a new node process (same server), and
 * passes on what it could not account for: for client memory that is the benchmark's own.
 */
export async function inFreshProcess(ctx: Context, name: string, count: number): Promise<Sample & { rssMb: number[] }> {
  const child = spawn(
    process.execPath,
    ["--expose-gc", "--import", "tsx", join(import.meta.dirname, "alone.ts"), name, ctx.url, String(count)],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  if (code !== 0) throw new Error(`${name} in a process of its own exited ${code}`);
  const report = JSON.parse(out.trim().split("\n").at(-1)!) as AloneReport;
  for (const p of report.problems) ctx.expect(p.what, p.got, p.wanted);
  return { count: report.count, seconds: report.seconds, rssMb: report.rssMb };
}

/** Client RSS in MB, after a full GC when node runs with --expose-gc (`pnpm bench` does). */
export function rssMb(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return Math.round(process.memoryUsage().rss / 1e6);
}

/**
 * Client RSS samples for a run of `count` messages: once it is under way (a tenth done: the buffers it
 * needs are allocated by then), half way, and at the end. Call `tick()` per message, `end()` after.
 */
export function rssSampler(count: number) {
  const samples: number[] = [];
  const at = new Set([Math.max(1, Math.floor(count / 10)), Math.floor(count / 2)]);
  let seen = 0;
  return {
    samples,
    tick() {
      if (at.has(++seen)) samples.push(rssMb());
    },
    end() {
      samples.push(rssMb());
      return samples;
    },
  };
}

/** Times `fn` whole; a Sample it returns is its own timing of the span it measures, kept as it is. */
export async function timed(fn: () => Promise<number | Sample>): Promise<Sample> {
  const t0 = performance.now();
  const r = await fn();
  return typeof r === "number" ? { count: r, seconds: (performance.now() - t0) / 1000 } : r;
}

/** Waits for `p`, or `ms` at most (a bound on every wait, so a lost message cannot hang the bench). */
export async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

export interface Sample {
  count: number;
  seconds: number;
}

/**
 * Runs each benchmark `reps` times, interleaved so that a slow spell of this shared machine hits all of
 * them alike, and keeps each one's median run. Each round starts one further along (a, b, c; b, c, a;
 * c, a, b; ...): runs that share a stream slow down as it grows (more messages, more msg ids to check
 * for duplicates), and in a fixed order the later ones of a round always met the bigger stream (the
 * publisher, always right after the raw ingest with ids, measured 0.79× of it in a fixed order and
 * 0.95× rotated, in one run). A benchmark returns its count (it is timed whole) or a Sample it timed
 * itself (the span it measures, without its setup and teardown).
 */
export async function interleaved<K extends string>(
  reps: number,
  fns: Record<K, () => Promise<number | Sample>>,
  /** Untimed, before each run: a fresh stream, so that no run meets a bigger one than another. */
  before?: () => Promise<void>,
): Promise<Record<K, Sample>> {
  const runs = {} as Record<K, Sample[]>;
  const keys = Object.keys(fns) as K[];
  for (let i = 0; i < reps; i++) {
    for (const key of [...keys.slice(i % keys.length), ...keys.slice(0, i % keys.length)]) {
      runs[key] ??= [];
      await before?.();
      runs[key].push(await timed(fns[key]));
    }
  }
  const median = (xs: Sample[]) => [...xs].sort((a, b) => a.count / a.seconds - b.count / b.seconds)[Math.floor(xs.length / 2)]!;
  return Object.fromEntries(Object.entries<Sample[]>(runs).map(([k, xs]) => [k, median(xs)])) as Record<K, Sample>;
}
