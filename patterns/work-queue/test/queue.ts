// What the work-queue e2e files share: the server (one per file; with NATS_URL the files share it and
// run one at a time: --no-file-parallelism), fresh JOBS streams before each test, workers that are
// stopped before the next, and the helpers that count what happened to every job.
import { spawn } from "node:child_process";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { serverForTests } from "@repo/harness";
import { storedMessages, versionAtLeast } from "@repo/kit";
import { beforeEach } from "vitest";
import { encodeJob, type Outgoing } from "../src/producer.js";
import { DLQ_STREAM, type RetryPolicy, STREAM, setup } from "../src/setup.js";
import type { StatusStore } from "../src/status/status.js";
import { withStatus } from "../src/status/tracked.js";
import { type Handler, type Outcome, startWorker, type Worker, type WorkerOptions } from "../src/worker.js";

export const e2e = serverForTests();

// Retries come fast; ack_wait is 1 s so a busy CI machine's stalls (heartbeats every 333 ms) do not hand
// a job in hand to another worker, which tests that count runs exactly would see as a repeat.
export const retry: RetryPolicy = { backoffMs: [200, 400, 600], maxDeliver: 4, ackWaitMs: 1_000 };
const open: NatsConnection[] = [];
export const workers: Worker[] = [];

beforeEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  for (const c of open.splice(0)) if (!c.isClosed()) await c.close();
  for (const s of [STREAM, DLQ_STREAM]) await e2e.jsm.streams.delete(s).catch(() => {});
  await setup(e2e.jsm, retry);
});

/**
 * nats-server 2.9: a failed delivery (a pull answered after its listener had gone) costs a try, and
 * a delivery count can go backwards (nats-server#5305 and #5338, fixed in 2.10.14 and 2.10.16; see
 * docs/server-versions.md). The one place the tests that count tries or deliveries ask about it.
 */
export const failedDeliveryCostsATry = () => !versionAtLeast(e2e.nc.info?.version, "2.10.0");

/**
 * How a job that fails every try may end in the DLQ: on its last try, with the handler's error; where
 * a failed delivery costs a try, also on its grace delivery, one past max_deliver, with the grace reason.
 */
export function failedEveryTry(deliveries: number | string, reason: string | undefined, cause: RegExp): boolean {
  const onLastTry = Number(deliveries) === retry.maxDeliver && cause.test(reason ?? "");
  const onGrace =
    Number(deliveries) === retry.maxDeliver + 1 && reason === `no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`;
  return onLastTry || (onGrace && failedDeliveryCostsATry());
}

/** The store, but `before()` runs (and may wait or throw) before each write of a done status. */
export function beforeDone(store: StatusStore, before: () => Promise<void>): StatusStore {
  const wrap =
    (target: object, v: (...a: unknown[]) => Promise<unknown>) =>
    async (key: string, data: string, ...rest: unknown[]) => {
      if (String(data).includes('"state":"done"')) await before();
      return v.call(target, key, data, ...rest);
    };
  const proxy = <T extends object>(o: T, writes: string[]) =>
    new Proxy(o, {
      get: (target, prop) => {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== "function") return v;
        return writes.includes(String(prop)) ? wrap(target, v as never) : v.bind(target);
      },
    });
  return { ...store, kv: proxy(store.kv, ["update", "create", "put"]), js: proxy(store.js, ["publish"]) };
}

/** The status store, but once a job's "done" is written, `then` runs (the tests close the worker's connection there). */
export function afterDone(store: StatusStore, then: () => void): StatusStore {
  const written = <T>(p: Promise<T>, data: unknown) =>
    p.then((r) => {
      if (String(data).includes('"state":"done"')) then();
      return r;
    });
  const kv = new Proxy(store.kv, {
    get: (target, prop) => {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      if (prop === "update" || prop === "create" || prop === "put")
        return (key: string, data: string, ...rest: unknown[]) => written(v.call(target, key, data, ...rest), data);
      return v.bind(target);
    },
  });
  const js = new Proxy(store.js, {
    get: (target, prop) => {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      if (prop === "publish")
        return (subject: string, data: string, ...rest: unknown[]) => written(v.call(target, subject, data, ...rest), data);
      return v.bind(target);
    },
  });
  return { ...store, kv, js };
}

/** Records every outcome, so tests can assert on exact counts per job id. */
export function tally() {
  const outcomes: Outcome[] = [];
  const ids = (kind: Outcome["kind"]) => outcomes.filter((o) => o.kind === kind).map((o) => o.job?.id ?? `seq-${o.ctx.seq}`);
  return { outcomes, onOutcome: (o: Outcome) => void outcomes.push(o), ids };
}

export async function spawnWorkers(
  n: number,
  handler: Handler,
  onOutcome: (o: Outcome) => void,
  prefix = "w",
  { status, ...extra }: Partial<WorkerOptions> & { status?: StatusStore } = {},
): Promise<NatsConnection[]> {
  const conns: NatsConnection[] = [];
  for (let i = 1; i <= n; i++) {
    const wnc = await connect({ servers: e2e.server.url });
    open.push(wnc);
    conns.push(wnc);
    // confirmAcks: a "processed" outcome means the server has the ack, so the stream counts checked
    // right after it are settled (a plain ack can still be in flight on the worker's connection).
    workers.push(
      await startWorker({
        nc: wnc,
        name: `${prefix}${i}`,
        // With a status store: each worker's handler wrapped in job status, on the worker's connection.
        handler: status ? withStatus(handler, { store: status, nc: wnc, log: e2e.log }) : handler,
        log: e2e.log,
        retry,
        onOutcome,
        confirmAcks: true,
        ...extra,
      }),
    );
  }
  return conns;
}

export const dlqMessages = () => storedMessages(e2e.jsm, DLQ_STREAM);

export const jobsNamed = (prefix: string, n: number): Outgoing[] =>
  Array.from({ length: n }, (_, i) => encodeJob({ id: `${prefix}-${i}`, task: "resize" }));

/** Runs one of the pattern's command-line tools against the server, stdin not a terminal; its exit code and output. */
export const tool = (entry: string, args: string[]) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", entry, ...args], {
      env: { ...process.env, NATS_URL: e2e.server.url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let [stdout, stderr] = ["", ""];
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });

export const countBy = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
