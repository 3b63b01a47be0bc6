// The work queue end to end (a producer and 4 workers, explicit acks), and the same job count,
// payload and worker concurrency on BullMQ with a local redis-server, which this starts and stops.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { encodeJob, publishJobs } from "@patterns/work-queue/producer";
import { DLQ_STREAM, STREAM, setup } from "@patterns/work-queue/setup";
import { type Job, startWorker, type Worker } from "@patterns/work-queue/worker";
import { freePort, repoRoot } from "@repo/harness";
import { createLogger } from "@repo/kit";
import { Worker as BullWorker, Queue } from "bullmq";
import { type Context, rssMb, timed, within } from "./measure.js";

export const WORKERS = 4;
export const CONCURRENCY = 64;
const input = "x".repeat(64); // makes each job about 128 bytes of JSON, like the other benchmarks

const job = (run: string, i: number): Job => ({ id: `${run}-${i}`, task: "bench", input });

function* encodedJobs(count: number, run: string) {
  for (let i = 0; i < count; i++) yield encodeJob(job(run, i));
}

export interface QueueRun {
  processed: number;
  seconds: number;
  /** Client RSS in MB at the start, half way, and at the end. */
  rssMb: number[];
}

/** The work-queue pattern end to end: its producer and WORKERS workers of CONCURRENCY, no-op handler. */
export async function natsQueue(ctx: Context, count: number): Promise<QueueRun> {
  const jsm = await jetstreamManager(ctx.nc);
  for (const s of [STREAM, DLQ_STREAM]) await jsm.streams.delete(s).catch(() => undefined);
  const retry = { backoffMs: [30_000], maxDeliver: 3 };
  await setup(jsm, retry);
  const log = createLogger("bench");
  log.level = "warn";
  const conns: NatsConnection[] = [];
  const workers: Worker[] = [];
  let processed = 0;
  const rss = [rssMb()];
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const onOutcome = () => {
    if (++processed === Math.floor(count / 2)) rss.push(rssMb());
    if (processed === count) allDone();
  };
  for (let i = 0; i < WORKERS; i++) {
    const nc = await connect({ servers: ctx.url, name: `bench-worker-${i}` });
    conns.push(nc);
    workers.push(await startWorker({ nc, name: `w${i}`, handler: async () => {}, log, concurrency: CONCURRENCY, retry, onOutcome }));
  }
  const producer = await connect({ servers: ctx.url, name: "bench-producer" });
  const r = await timed(async () => {
    await publishJobs(producer, encodedJobs(count, Date.now().toString(36)));
    await within(done, 600_000);
    return processed;
  });
  rss.push(rssMb());
  await Promise.all(workers.map((w) => w.stop()));
  for (const c of [...conns, producer]) await c.close();
  const left = (await jsm.streams.info(STREAM)).state.messages;
  ctx.expect("work-queue: jobs processed", r.count, count);
  ctx.expect("work-queue: jobs left in the queue", left, 0);
  return { processed: r.count, seconds: r.seconds, rssMb: rss };
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

/** BullMQ: the same jobs, WORKERS workers of CONCURRENCY, no-op processor; then NATS again in the same run. */
export async function bullmqQueue(ctx: Context): Promise<void> {
  const count = ctx.quick ? 2_000 : 100_000;
  const redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null };
  try {
    const queue = new Queue("bench", { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } });
    let completed = 0;
    let allDone: () => void = () => {};
    const done = new Promise<void>((r) => (allDone = r));
    const workers = Array.from({ length: WORKERS }, () => {
      const w = new BullWorker("bench", async () => {}, { connection, concurrency: CONCURRENCY });
      w.on("completed", () => ++completed === count && allDone());
      return w;
    });
    const rss = [rssMb()];
    const r = await timed(async () => {
      const run = Date.now().toString(36);
      let batch: { name: string; data: Job }[] = [];
      for (let i = 0; i < count; i++) {
        batch.push({ name: "bench", data: job(run, i) });
        if (batch.length === 1_000) {
          await queue.addBulk(batch);
          batch = [];
        }
      }
      if (batch.length > 0) await queue.addBulk(batch);
      await within(done, 600_000);
      return completed;
    });
    rss.push(rssMb());
    await Promise.all(workers.map((w) => w.close()));
    await queue.obliterate({ force: true });
    await queue.close();
    ctx.expect("bullmq: jobs completed", r.count, count);
    ctx.record({
      name: "bullmq",
      what: `BullMQ ${WORKERS} workers × ${CONCURRENCY} on redis-server (AOF everysec), ${count.toLocaleString("en")} jobs`,
      ...r,
      rssMb: rss,
    });
  } finally {
    await redis.stop();
  }
  const q = await natsQueue(ctx, count);
  ctx.record({
    name: "work-queue.vs_bullmq",
    what: `the work-queue pattern, the same ${count.toLocaleString("en")} jobs`,
    count: q.processed,
    seconds: q.seconds,
    rssMb: q.rssMb,
    ratioOf: "bullmq",
    goal: 1,
  });
}
