// The work queue end to end (a producer and 4 workers, explicit acks), and the same job count,
// payload and worker concurrency on BullMQ with a local redis-server, which this starts and stops.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, delay, type NatsConnection } from "@nats-io/transport-node";
import type { Task } from "@patterns/priority-queue/producer";
import { LEVELS } from "@patterns/priority-queue/setup";
import type { Job } from "@patterns/work-queue/job";
import { encodeJob, publishJobs } from "@patterns/work-queue/producer";
import { DLQ_STREAM, STREAM, setup } from "@patterns/work-queue/setup";
import { startWorker, type Worker } from "@patterns/work-queue/worker";
import { freePort, repoRoot } from "@repo/harness";
import { createLogger, createPublisher } from "@repo/kit";
import { Worker as BullWorker, Queue } from "bullmq";
import * as hdr from "hdr-histogram-js";
import { type Context, interleaved, type Latency, rssMb, rssSampler, type Sample, timed, within } from "./measure.js";
import { priorityRun, priorityTasks } from "./patterns.js";

export const WORKERS = 4;
export const CONCURRENCY = 64;
const input = "x".repeat(64); // makes each job about 128 bytes of JSON, like the other benchmarks

const job = (run: string, i: number): Job => ({ id: `${run}-${i}`, task: "bench", input });

function* encodedJobs(count: number, run: string) {
  for (let i = 0; i < count; i++) yield encodeJob(job(run, i));
}

/** A queue run: the jobs processed (count) and how long they took, from the first publish to the last. */
export interface QueueRun extends Sample {
  /** Client RSS in MB once under way, half way, and at the end (rssSampler). */
  rssMb: number[];
}

export interface QueueOptions {
  /** Publishes the jobs (default: all at once through the pattern's producer). */
  feed?: (producer: NatsConnection, count: number, run: string) => Promise<unknown>;
  /** The handler (default: none, a no-op). */
  handler?: (job: Job) => void;
  /**
   * Sample client RSS while the jobs run (rssSampler: each sample a full GC inside the timed span), for
   * the run whose memory is judged. Otherwise RSS is read before and after, outside it.
   */
  rssWhileRunning?: boolean;
}

/**
 * The work-queue pattern end to end: its producer and WORKERS workers of CONCURRENCY, no-op handler,
 * timed from the first publish to the last job processed (starting and stopping the workers is not).
 */
export async function natsQueue(ctx: Context, count: number, o: QueueOptions = {}): Promise<QueueRun> {
  const jsm = await jetstreamManager(ctx.nc);
  for (const s of [STREAM, DLQ_STREAM]) await jsm.streams.delete(s).catch(() => undefined);
  const retry = { backoffMs: [30_000], maxDeliver: 3 };
  await setup(jsm, retry);
  const log = createLogger("bench");
  log.level = "warn";
  const conns: NatsConnection[] = [];
  const workers: Worker[] = [];
  let processed = 0;
  const rss = o.rssWhileRunning ? rssSampler(count) : undefined;
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const onOutcome = () => {
    rss?.tick();
    if (++processed === count) allDone();
  };
  for (let i = 0; i < WORKERS; i++) {
    const nc = await connect({ servers: ctx.url.split(","), name: `bench-worker-${i}` });
    conns.push(nc);
    const handler = async (job: Job) => o.handler?.(job);
    workers.push(await startWorker({ nc, name: `w${i}`, handler, log, concurrency: CONCURRENCY, retry, onOutcome }));
  }
  const producer = await connect({ servers: ctx.url.split(","), name: "bench-producer" });
  const before = rss ? [] : [rssMb()];
  const r = await timed(async () => {
    const run = Date.now().toString(36);
    await (o.feed ? o.feed(producer, count, run) : publishJobs(producer, encodedJobs(count, run)));
    await within(done, 600_000);
    return processed;
  });
  const rssSamples = rss ? rss.end() : [...before, rssMb()];
  await Promise.all(workers.map((w) => w.stop()));
  for (const c of [...conns, producer]) await c.close();
  const left = (await jsm.streams.info(STREAM)).state.messages;
  ctx.expect("work-queue: jobs processed", r.count, count);
  ctx.expect("work-queue: jobs left in the queue", left, 0);
  return { ...r, rssMb: rssSamples };
}

/** Debian's redis-server from packages/bench/bin/provision-redis.sh, on a free loopback port, no persistence but the AOF. */
async function startRedis(): Promise<{ port: number; stop(): Promise<void> }> {
  const root = join(repoRoot, ".cache/redis/root");
  const bin = join(root, "usr/bin/redis-server");
  if (!existsSync(bin)) {
    process.stderr.write("getting redis-server from Debian's packages (once)...\n");
    const got = spawnSync("bash", [join(repoRoot, "packages/bench/bin/provision-redis.sh")], { stdio: ["ignore", "ignore", "inherit"] });
    if (got.status !== 0 || !existsSync(bin))
      throw new Error(`no redis-server in ${root}: "bash packages/bench/bin/provision-redis.sh" failed`);
  }
  const libs = readdirSync(join(root, "usr/lib"))
    .filter((d) => d.endsWith("-linux-gnu"))
    .map((d) => join(root, "usr/lib", d));
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "jsp-redis-"));
  // Like the NATS file store: on disk, fsync'd lazily (appendfsync everysec; nats-server syncs every 2 min).
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--logfile",
    join(dir, "redis.log"),
  ];
  const child: ChildProcess = spawn(bin, args, { env: { ...process.env, LD_LIBRARY_PATH: libs.join(":") }, stdio: "ignore" });
  const { Redis } = await import("ioredis");
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    const ok = await probe
      .connect()
      .then(() => probe.ping())
      .then(
        () => true,
        () => false,
      );
    probe.disconnect();
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Connection = { host: string; port: number; maxRetriesPerRequest: null };

/**
 * BullMQ drains `count` jobs (added by `add`) with `workers` workers of `concurrency`; `onStart` sees
 * each job as its processor starts. Returns the run, timed from the first add to the last completion.
 */
async function bullmqRun(
  connection: Connection,
  count: number,
  o: { workers: number; concurrency: number; add: (queue: Queue) => Promise<void>; onStart?: (data: Job) => void },
): Promise<Sample & { rssMb: number[] }> {
  const queue = new Queue("bench", { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } });
  let completed = 0;
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const workers = Array.from({ length: o.workers }, () => {
    const w = new BullWorker("bench", async (j) => void o.onStart?.(j.data), { connection, concurrency: o.concurrency });
    w.on("completed", () => ++completed === count && allDone());
    return w;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  const rss = [rssMb()];
  const r = await timed(async () => {
    await o.add(queue);
    await within(done, 600_000);
    return completed;
  });
  rss.push(rssMb());
  await Promise.all(workers.map((w) => w.close()));
  await queue.obliterate({ force: true });
  await queue.close();
  return { ...r, rssMb: rss };
}

/** Adds jobs in bulks of 1,000 (what a producer with a backlog would do). */
const addAll =
  (jobs: { name: string; data: Job | Task; opts?: { priority: number } }[]) =>
  async (queue: Queue): Promise<void> => {
    for (let i = 0; i < jobs.length; i += 1_000) await queue.addBulk(jobs.slice(i, i + 1_000) as never);
  };

/** Paced: `count` jobs at `rate` per second, each stamped with the time it was due (not when it left). */
async function paced(count: number, rate: number, send: (due: number[]) => Promise<unknown> | undefined): Promise<void> {
  const t0 = performance.now();
  let sent = 0;
  const sends: Promise<unknown>[] = [];
  while (sent < count) {
    const due = Math.min(count, Math.floor(((performance.now() - t0) * rate) / 1_000) + 1);
    const stamps: number[] = [];
    for (; sent < due; sent++) stamps.push(t0 + (sent * 1_000) / rate);
    const p = stamps.length > 0 ? send(stamps) : undefined;
    if (p) sends.push(p);
    await delay(1);
  }
  await Promise.all(sends);
}

/** Latency in ms from each job's due time to its handler's start, into an HDR histogram (µs). */
function latencyRecorder() {
  const h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  return {
    record: (due: number) => h.recordValue(Math.max(1, Math.round((performance.now() - due) * 1_000))),
    summary: (offered: number): Latency => {
      const ms = (p: number) => Math.round(h.getValueAtPercentile(p)) / 1_000;
      return { offered: Math.round(offered), p50: ms(50), p99: ms(99), p999: ms(99.9), max: Math.round(h.maxValue) / 1_000 };
    },
  };
}

const LATENCY_SECONDS = 20;

/**
 * BullMQ and NATS side by side, in the same run: the work queue's throughput (the same jobs, workers
 * and concurrency), the priority queue's (3 levels, the same tasks, 4 workers taking one at a time),
 * and the work queue's latency at about half of each side's measured maximum.
 */
export async function bullmqQueue(ctx: Context): Promise<void> {
  const count = ctx.quick ? 2_000 : 100_000;
  const prioCount = ctx.quick ? 1_000 : 20_000;
  const redis = await startRedis();
  const connection: Connection = { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null };
  const run = Date.now().toString(36);
  const tasks = priorityTasks(prioCount);
  let bullLatency: { run: Sample; latency: Latency } | undefined;
  const rss: Record<string, number[]> = {};
  let r: Record<"bullmq" | "nats" | "bullPrio" | "natsPrio", Sample>;
  try {
    // Each side 3 times, interleaved (1 in --quick), the median kept: one run each left the ratio to
    // whichever side met a slow spell of the machine.
    r = await interleaved(ctx.quick ? 1 : 3, {
      bullmq: async () => {
        const b = await bullmqRun(connection, count, {
          workers: WORKERS,
          concurrency: CONCURRENCY,
          add: addAll(Array.from({ length: count }, (_, i) => ({ name: "bench", data: job(run, i) }))),
        });
        rss.bullmq = b.rssMb;
        return b;
      },
      nats: async () => {
        const q = await natsQueue(ctx, count);
        rss.nats = q.rssMb;
        return q;
      },
      // BullMQ's priorities: 1 is the highest; a prioritized job goes through a sorted set.
      bullPrio: () =>
        bullmqRun(connection, prioCount, {
          workers: WORKERS,
          concurrency: 1,
          add: addAll(tasks.map((t) => ({ name: "task", data: t, opts: { priority: LEVELS.indexOf(t.level) + 1 } }))),
        }),
      natsPrio: () => priorityRun(ctx, tasks), // the tasks BullMQ had
    });
    ctx.expect("bullmq: jobs completed", r.bullmq.count, count);
    ctx.expect("work-queue (vs BullMQ)", r.nats.count, count);
    ctx.expect("bullmq priorities: jobs completed", r.bullPrio.count, prioCount);
    ctx.expect("priority-queue (vs BullMQ)", r.natsPrio.count, prioCount);
    bullLatency = await bullmqLatency(ctx, connection, r.bullmq);
  } finally {
    await redis.stop();
  }
  ctx.record({
    name: "bullmq",
    what: `BullMQ ${WORKERS} workers × ${CONCURRENCY} on redis-server (AOF everysec), ${count.toLocaleString("en")} jobs`,
    ...r.bullmq,
    rssMb: rss.bullmq,
  });
  ctx.record({
    name: "bullmq.priorities",
    what: `BullMQ with job priorities (3 levels), ${WORKERS} workers × 1, ${prioCount.toLocaleString("en")} tasks`,
    ...r.bullPrio,
  });
  ctx.record({
    name: "work-queue.vs_bullmq",
    what: `the work-queue pattern, the same ${count.toLocaleString("en")} jobs`,
    ...r.nats,
    rssMb: rss.nats,
    ratioOf: "bullmq",
    goal: 3,
  });
  ctx.record({
    name: "priority-queue.vs_bullmq",
    what: `the priority-queue pattern (4 workers, one task at a time each), the same ${prioCount.toLocaleString("en")} tasks`,
    ...r.natsPrio,
    ratioOf: "bullmq.priorities",
    goal: 1,
  });
  const nats = await natsLatency(ctx, r.nats);
  if (bullLatency)
    ctx.record({ name: "bullmq.latency", what: "BullMQ at half its measured maximum", ...bullLatency.run, latency: bullLatency.latency });
  ctx.record({
    name: "work-queue.latency",
    what: "the work-queue pattern at half its measured maximum",
    ...nats.run,
    latency: nats.latency,
  });
}

/** Offered load: half the measured maximum, for LATENCY_SECONDS (a small fixed load for --quick). */
const halfLoad = (ctx: Context, max: Sample) => {
  const rate = ctx.quick ? 500 : max.count / max.seconds / 2;
  return { rate, count: Math.round(rate * (ctx.quick ? 1 : LATENCY_SECONDS)) };
};

async function bullmqLatency(ctx: Context, connection: Connection, max: Sample): Promise<{ run: Sample; latency: Latency }> {
  const { rate, count } = halfLoad(ctx, max);
  const rec = latencyRecorder();
  const run = await bullmqRun(connection, count, {
    workers: WORKERS,
    concurrency: CONCURRENCY,
    add: (queue) => {
      let i = 0;
      return paced(count, rate, (due) =>
        queue.addBulk(due.map((at) => ({ name: "bench", data: { id: `l${i++}`, task: "bench", input: { at } } }))),
      );
    },
    onStart: (data) => rec.record((data.input as { at: number }).at),
  });
  ctx.expect("bullmq latency: jobs completed", run.count, count);
  return { run, latency: rec.summary(rate) };
}

async function natsLatency(ctx: Context, max: Sample): Promise<{ run: Sample; latency: Latency }> {
  const { rate, count } = halfLoad(ctx, max);
  const rec = latencyRecorder();
  const q = await natsQueue(ctx, count, {
    feed: async (producer, n, runId) => {
      const publisher = createPublisher(producer, { stream: STREAM });
      let i = 0;
      let failed = 0;
      await paced(n, rate, (due) => {
        for (const at of due) {
          void publisher.publish(encodeJob({ id: `${runId}-${i++}`, task: "bench", input: { at } })).then((r) => {
            if (r.error) failed++;
          });
        }
        return undefined;
      });
      await publisher.flush();
      publisher.close();
      ctx.expect("work-queue latency: jobs not stored", failed, 0);
    },
    handler: (j) => rec.record((j.input as { at: number }).at),
  });
  return { run: { count: q.count, seconds: q.seconds }, latency: rec.summary(rate) };
}
