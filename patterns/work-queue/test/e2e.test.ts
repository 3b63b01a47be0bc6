import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { freePort, type NatsServer, sleep, useServer, waitFor } from "@repo/harness";
import { storedMessages, versionAtLeast } from "@repo/kit";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { pauseWorkers, resumeWorkers } from "../src/control.js";
import { DlqHeaders, deadLetter, startDeadLetterMover } from "../src/dead-letter.js";
import { listDeadLetters, requeue } from "../src/dlq.js";
import { encodeJob, type Outgoing, publishJobs } from "../src/producer.js";
import { CONSUMER, DLQ_STREAM, GRACE_DELIVERIES, type RetryPolicy, STREAM, setup } from "../src/setup.js";
import {
  advance,
  getStatus,
  type JobStatus,
  markQueued,
  openStatus,
  perKeyTtl,
  STATUS_BUCKET,
  type StatusStore,
  setupStatus,
  waitForResult,
} from "../src/status.js";
import { type Handler, type Outcome, startWorker, type Worker, type WorkerOptions } from "../src/worker.js";

// Retries come fast; ack_wait is 1 s so a busy CI machine's stalls (heartbeats every 333 ms) do not hand
// a job in hand to another worker, which tests that count runs exactly would see as a repeat.
const retry: RetryPolicy = { backoffMs: [200, 400, 600], maxDeliver: 4, ackWaitMs: 1_000 };
const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const open: NatsConnection[] = [];
const workers: Worker[] = [];

beforeAll(async () => {
  server = await useServer();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

beforeEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  for (const c of open.splice(0)) if (!c.isClosed()) await c.close();
  for (const s of [STREAM, DLQ_STREAM]) await jsm.streams.delete(s).catch(() => {});
  await setup(jsm, retry);
});

/**
 * How a job that fails every try may end in the DLQ: on its last try, with the handler's error. On 2.9 a
 * failed delivery can cost a try (nats-server#5305 and #5338, fixed in 2.10.14 and 2.10.16: see the README),
 * so there it may instead end on its grace delivery, one past max_deliver, with the grace reason.
 */
function failedEveryTry(deliveries: number | string, reason: string | undefined, cause: RegExp): boolean {
  const onLastTry = Number(deliveries) === retry.maxDeliver && cause.test(reason ?? "");
  const onGrace =
    Number(deliveries) === retry.maxDeliver + 1 && reason === `no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`;
  return onLastTry || (onGrace && !versionAtLeast(nc.info?.version, "2.10.0"));
}

/** The status store, but once a job's "done" is written, `then` runs (the tests close the worker's connection there). */
/** The store, but `before()` runs (and may wait or throw) before each write of a done status. */
function beforeDone(store: StatusStore, before: () => Promise<void>): StatusStore {
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

function afterDone(store: StatusStore, then: () => void): StatusStore {
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
function tally() {
  const outcomes: Outcome[] = [];
  const ids = (kind: Outcome["kind"]) => outcomes.filter((o) => o.kind === kind).map((o) => o.job?.id ?? `seq-${o.ctx.seq}`);
  return { outcomes, onOutcome: (o: Outcome) => void outcomes.push(o), ids };
}

async function spawnWorkers(
  n: number,
  handler: Handler,
  onOutcome: (o: Outcome) => void,
  prefix = "w",
  extra: Partial<WorkerOptions> = {},
): Promise<NatsConnection[]> {
  const conns: NatsConnection[] = [];
  for (let i = 1; i <= n; i++) {
    const wnc = await connect({ servers: server.url });
    open.push(wnc);
    conns.push(wnc);
    // confirmAcks: a "processed" outcome means the server has the ack, so the stream counts checked
    // right after it are settled (a plain ack can still be in flight on the worker's connection).
    workers.push(await startWorker({ nc: wnc, name: `${prefix}${i}`, handler, log, retry, onOutcome, confirmAcks: true, ...extra }));
  }
  return conns;
}

const dlqMessages = () => storedMessages(jsm, DLQ_STREAM);

const jobsNamed = (prefix: string, n: number): Outgoing[] =>
  Array.from({ length: n }, (_, i) => encodeJob({ id: `${prefix}-${i}`, task: "resize" }));

/** Runs one of the pattern's command-line tools against the server, stdin not a terminal; its exit code and output. */
const tool = (entry: string, args: string[]) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", entry, ...args], {
      env: { ...process.env, NATS_URL: server.url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let [stdout, stderr] = ["", ""];
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });

const countBy = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

describe(`work-queue on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("without a crash, runs each handler once and ends every job processed or dead-lettered exactly once: none lost, none in both, load spread over workers", async () => {
    const good = jobsNamed("good", 240);
    const poison = jobsNamed("poison", 4);
    const malformed: Outgoing[] = [0, 1, 2].map((i) => ({
      id: `bad-${i}`,
      subject: "jobs.resize",
      data: new TextEncoder().encode(i === 2 ? '{"id": 7}' : "{not json"),
    }));
    const t = tally();
    const handled: string[] = [];
    await spawnWorkers(
      3,
      async (job) => {
        await sleep(1 + (job.id.length % 3));
        if (job.id.startsWith("poison")) throw new Error("boom: cannot process");
        handled.push(job.id);
      },
      t.onOutcome,
    );

    const all = [...good, ...poison, ...malformed];
    const res = await publishJobs(nc, all);
    expect(res).toMatchObject({ stored: all.length, duplicates: 0, failed: 0 });
    await waitFor("every job accounted for", () => t.ids("processed").length + t.ids("dead_lettered").length >= all.length, {
      timeoutMs: 30_000,
    });
    await sleep(300); // anything extra (a duplicate) would show up now

    const processed = countBy(t.ids("processed"));
    const dead = countBy(t.ids("dead_lettered"));
    expect(processed.size).toBe(good.length);
    expect([...processed.values()].every((n) => n === 1)).toBe(true);
    expect(countBy(handled).size).toBe(good.length);
    expect(handled.length).toBe(good.length); // the handler completed each good job once
    expect(dead.size).toBe(poison.length + malformed.length);
    expect([...dead.keys()].filter((id) => processed.has(id))).toEqual([]);
    expect(t.outcomes.filter((o) => o.kind === "processed").every((o) => o.kind === "processed" && o.acked)).toBe(true);

    // Load is spread: more than one worker completed jobs.
    const perWorker = countBy(t.outcomes.filter((o) => o.kind === "processed").map((o) => o.ctx.worker));
    expect(perWorker.size).toBeGreaterThan(1);

    // The work stream is empty; the DLQ holds exactly the bad jobs, each once, with the facts.
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
    const dlq = await dlqMessages();
    expect(dlq.length).toBe(poison.length + malformed.length);
    for (const m of dlq) {
      const seq = Number(m.header.get(DlqHeaders.Sequence));
      expect(m.header.get(DlqHeaders.Stream)).toBe(STREAM);
      expect(m.header.get(DlqHeaders.Subject)).toBe("jobs.resize");
      expect(m.subject).toBe("dlq.jobs.resize");
      expect(seq).toBeGreaterThan(0);
      const reason = m.header.get(DlqHeaders.Reason);
      if (new TextDecoder().decode(m.data).startsWith('{"id":"poison')) {
        const deliveries = m.header.get(DlqHeaders.Deliveries);
        expect(failedEveryTry(deliveries, reason, /boom: cannot process/), `${deliveries} deliveries, ${reason}`).toBe(true);
      } else {
        expect(m.header.get(DlqHeaders.Deliveries)).toBe("1"); // malformed: no retries
        expect(reason).toMatch(/^malformed payload: /);
      }
    }
    expect(new Set(dlq.map((m) => m.header.get(DlqHeaders.Sequence))).size).toBe(dlq.length);
  });

  it("does not dead-letter a job whose first attempts fail and whose last attempt succeeds", async (ctx) => {
    // Not on 2.9: there a failed delivery (a pull request answered after its fetch ended) costs a try
    // and can come back with its count going backwards (CI saw a job's 4th delivery never arrive, and
    // a count-1 delivery after the job was processed on delivery 4). Server bugs, fixed in
    // nats-server#5305 (2.10.14) and #5338 (2.10.16): see the README. The exact count needs those fixes.
    if (!versionAtLeast(nc.info?.version, "2.10.0")) ctx.skip();
    const t = tally();
    await spawnWorkers(
      2,
      async (_job, ctx) => {
        if (ctx.delivery < retry.maxDeliver) throw new Error(`transient failure ${ctx.delivery}`);
      },
      t.onOutcome,
    );
    await publishJobs(nc, jobsNamed("flaky", 3));
    // On failure, say what did happen to each job.
    const detail = () =>
      t.outcomes.map((o) => `${o.kind}:${o.job?.id ?? o.ctx.seq}@${o.ctx.delivery}${o.kind === "dead_lettered" ? ` (${o.reason})` : ""}`);
    await waitFor("3 flaky jobs processed", () => t.ids("processed").length === 3, { timeoutMs: 30_000, detail });
    expect(t.ids("dead_lettered")).toEqual([]);
    expect(t.ids("retry").length).toBe(3 * (retry.maxDeliver - 1));
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("retries a failing job on its schedule as written (0.3 s, 1.2 s, 2.4 s), measured, not the server's backoff sum", async () => {
    const schedule: RetryPolicy = { backoffMs: [300, 1_200, 2_400], maxDeliver: 4 };
    await jsm.consumers.delete(STREAM, CONSUMER);
    await setup(jsm, schedule);
    const seen: number[] = [];
    const t = tally();
    await spawnWorkers(
      1,
      async () => {
        seen.push(performance.now());
        throw new Error("always fails");
      },
      t.onOutcome,
      "w",
      { retry: schedule },
    );
    await publishJobs(nc, jobsNamed("timed", 1));
    await waitFor("dead-lettered after its tries", () => t.ids("dead_lettered").length === 1, { timeoutMs: 20_000 });
    const [dead] = await dlqMessages();
    expect(failedEveryTry(dead!.header.get(DlqHeaders.Deliveries), dead!.header.get(DlqHeaders.Reason), /always fails/)).toBe(true);
    const gaps = seen.slice(1).map((at, n) => Math.round(at - seen[n]!));
    // On 2.9 a failed delivery can cost a try (see failedEveryTry): only its first gaps are compared there.
    const compared = versionAtLeast(nc.info?.version, "2.10.0") ? schedule.backoffMs : schedule.backoffMs.slice(0, gaps.length);
    expect(gaps.length, JSON.stringify(gaps)).toBe(compared.length);
    for (const [n, due] of compared.entries()) {
      expect(gaps[n], `gap ${n + 1} of ${JSON.stringify(gaps)}`).toBeGreaterThanOrEqual(due - 1);
      expect(gaps[n], `gap ${n + 1} of ${JSON.stringify(gaps)}`).toBeLessThan(due + 500);
    }
  });

  it("redelivers the job of a worker whose connection dies mid-job to another worker, after ack_wait, nothing lost", async () => {
    const t = tally();
    let victimStarted = 0;
    const [victim] = await spawnWorkers(
      1,
      async (job, ctx) => {
        if (job.id === "jobs-5") {
          victimStarted = performance.now();
          await victim!.close(); // the worker "dies" holding the job
          throw new Error("gone");
        }
        void ctx;
      },
      t.onOutcome,
      "victim",
    );
    await publishJobs(nc, jobsNamed("jobs", 20));
    await waitFor("the victim took job 5", () => victimStarted > 0);
    let redeliveredAt = 0;
    const survivor: Handler = async (job) => {
      if (job.id === "jobs-5") redeliveredAt = performance.now();
    };
    await spawnWorkers(2, survivor, t.onOutcome, "survivor");
    await waitFor("all 20 jobs processed", () => countBy(t.ids("processed")).size === 20, { timeoutMs: 20_000 });
    const five = t.outcomes.find((o) => o.kind === "processed" && o.job.id === "jobs-5")!;
    expect(five.ctx.worker).toMatch(/^survivor/);
    expect(five.ctx.delivery).toBe(2);
    // Measured from the handler's start, a little after the server's clock for ack_wait started.
    expect(redeliveredAt - victimStarted).toBeGreaterThanOrEqual(retry.ackWaitMs! - 50);
    expect(t.ids("processed").length).toBe(20);
    expect(t.ids("dead_lettered")).toEqual([]);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("redelivers the job of a worker process killed with SIGKILL mid-job, no earlier than ack_wait", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "test/worker-process.ts"], {
      env: {
        ...process.env,
        NATS_URL: server.url,
        BACKOFF_MS: retry.backoffMs.join(","),
        ACK_WAIT_MS: String(retry.ackWaitMs),
        MAX_DELIVER: String(retry.maxDeliver),
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    let startedAt = 0;
    const started = new Promise<string>((resolve) =>
      lines.on("line", (l) => {
        if (!l.startsWith("started ")) return;
        startedAt = performance.now();
        resolve(l.slice(8));
      }),
    );
    await publishJobs(nc, jobsNamed("proc", 1));
    const id = await Promise.race([started, sleep(15_000).then(() => "timeout")]);
    expect(id).toBe("proc-0");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    const t = tally();
    let redeliveredAt = 0;
    await spawnWorkers(
      1,
      async () => {
        redeliveredAt = performance.now();
      },
      t.onOutcome,
    );
    await waitFor("the killed worker's job processed", () => t.ids("processed").length === 1, { timeoutMs: 15_000 });
    expect(t.ids("processed")).toEqual(["proc-0"]);
    expect(t.outcomes[0]!.ctx.delivery).toBe(2);
    // startedAt is when the child's line reached us, a little after the delivery: allow 50ms for that.
    expect(redeliveredAt - startedAt).toBeGreaterThanOrEqual(retry.ackWaitMs! - 50);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("dead-letters a job whose every delivery dies unacked (MAX_DELIVERIES advisory), so nothing is stranded", async () => {
    const moved: number[] = [];
    const mover = await startDeadLetterMover(nc, log, (seq) => moved.push(seq));
    try {
      // A worker that takes jobs and never answers: each delivery times out (a crash loop).
      const js = jetstream(nc);
      const sink = await (await js.consumers.get(STREAM, CONSUMER)).consume({ max_messages: 1 });
      const deliveries: number[] = [];
      const swallow = (async () => {
        for await (const m of sink) deliveries.push(m.info.deliveryCount);
      })();
      await publishJobs(nc, jobsNamed("crashloop", 1));
      await waitFor("the dlq-mover to move the job", () => moved.length === 1, { timeoutMs: 20_000 });
      await sink.close();
      await swallow;
      // The handler's tries, then the grace deliveries: all swallowed, so only the advisory is left.
      expect(deliveries).toEqual(Array.from({ length: retry.maxDeliver + GRACE_DELIVERIES }, (_, i) => i + 1));
      expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
      const dlq = await dlqMessages();
      expect(dlq.length).toBe(1);
      expect(dlq[0]!.header.get(DlqHeaders.By)).toBe("dlq-mover");
      expect(dlq[0]!.header.get(DlqHeaders.Deliveries)).toBe(String(retry.maxDeliver + GRACE_DELIVERIES));
      expect(dlq[0]!.json<{ id: string }>().id).toBe("crashloop-0");
    } finally {
      await mover.stop();
    }
  });

  it("dead-letters, without running the handler again, a job whose worker died on its last try", async () => {
    const t = tally();
    const tries: number[] = [];
    const conns = await spawnWorkers(
      3,
      async (_job, ctx) => {
        tries.push(ctx.delivery);
        if (ctx.delivery < retry.maxDeliver) throw new Error("fails");
        await byWorker.get(ctx.worker)!.close(); // this worker dies on the last try
        throw new Error("died");
      },
      t.onOutcome,
    );
    const byWorker = new Map(conns.map((c, i) => [`w${i + 1}`, c]));
    await publishJobs(nc, jobsNamed("last", 1));
    await waitFor("dead-lettered by a surviving worker", () => t.ids("dead_lettered").length === 1, { timeoutMs: 20_000 });
    expect(tries).toEqual(Array.from({ length: retry.maxDeliver }, (_, i) => i + 1)); // the handler never ran a 5th time
    const dead = t.outcomes.find((o) => o.kind === "dead_lettered")!;
    expect(dead.ctx.delivery).toBe(retry.maxDeliver + 1);
    expect(dead.job?.id).toBe("last-0");
    const dlq = await dlqMessages();
    expect(dlq).toHaveLength(1);
    expect(dlq[0]!.header.get(DlqHeaders.Reason)).toBe(`no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("sweeps a job that ran out of deliveries while no dlq-mover was listening into the DLQ, once", async () => {
    const js = jetstream(nc);
    const sink = await (await js.consumers.get(STREAM, CONSUMER)).consume({ max_messages: 1 });
    let deliveries = 0;
    const swallow = (async () => {
      for await (const _ of sink) deliveries++;
    })();
    await publishJobs(nc, jobsNamed("stranded", 1));
    await waitFor("max deliveries used up", () => deliveries === retry.maxDeliver + GRACE_DELIVERIES, { timeoutMs: 20_000 });
    await sleep(retry.ackWaitMs! + 300); // the last delivery's ack_wait runs out
    await sink.close();
    await swallow;
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(1); // stranded: no consumer will deliver it again

    const mover = await startDeadLetterMover(nc, log);
    try {
      expect(await mover.sweep()).toBe(1);
      expect(await mover.sweep()).toBe(0); // idempotent
    } finally {
      await mover.stop();
    }
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
    const dlq = await dlqMessages();
    expect(dlq.map((m) => m.json<{ id: string }>().id)).toEqual(["stranded-0"]);
  });

  it("stops a worker gracefully: the job in hand finishes and is acked, the rest go to the other workers", async () => {
    const t = tally();
    let inHand = "";
    await spawnWorkers(
      1,
      async (job) => {
        if (!inHand) {
          inHand = job.id;
          await sleep(300);
        }
      },
      t.onOutcome,
      "leaving",
    );
    await publishJobs(nc, jobsNamed("drain", 30));
    await waitFor("the leaving worker holds a job", () => inHand !== "");
    const leaving = workers.pop()!;
    await leaving.stop();
    expect(t.ids("processed")).toContain(inHand);
    await spawnWorkers(2, async () => {}, t.onOutcome, "staying");
    await waitFor("all 30 processed", () => countBy(t.ids("processed")).size === 30, { timeoutMs: 20_000 });
    expect(t.ids("processed").length).toBe(30);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("keeps pulling when its consumer is deleted and set up again: every job published after is processed, once", async () => {
    const t = tally();
    await spawnWorkers(2, async () => {}, t.onOutcome);
    await publishJobs(nc, jobsNamed("before", 5));
    await waitFor("the 5 jobs before processed", () => t.ids("processed").length === 5, { timeoutMs: 10_000 });
    await jsm.consumers.delete(STREAM, CONSUMER);
    // The workers' waiting pulls end with a 409 (no count of what never came), their next ones find no
    // consumer (503): each is forgotten after a pause and asked again.
    await sleep(1_500);
    await setup(jsm, retry);
    await publishJobs(nc, jobsNamed("after", 10));
    await waitFor("the 10 jobs after processed", () => t.ids("processed").length === 15, { timeoutMs: 15_000 });
    expect(countBy(t.ids("processed")).size).toBe(15);
    expect(t.ids("dead_lettered")).toEqual([]);
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("refuses an existing JOBS stream with the wrong retention, with a clear message", async () => {
    await jsm.streams.delete(STREAM);
    await jsm.streams.add({ name: STREAM, subjects: ["jobs.>"] });
    await expect(setup(jsm, retry)).rejects.toThrow(
      /stream JOBS exists with retention="limits" but this pattern needs retention="workqueue"/,
    );
  });

  it("refuses a job id that cannot be a KV key, or a task that is not a subject token, when it is published", async () => {
    for (const id of ["has space", "a*b", "a>b", "", ".lead", "trail.", "a..b", "ünï"])
      expect(() => encodeJob({ id, task: "resize" }), id).toThrow(/^job id .* cannot be a status key: use letters, digits and - _ = \/ \./);
    for (const task of ["two words", "a.*", ">", ""])
      expect(() => encodeJob({ id: "ok", task }), task).toThrow(/^job task .* is not a subject/);
    // One published around the producer is dead-lettered at once, not after every try.
    const t = tally();
    await spawnWorkers(1, async () => {}, t.onOutcome);
    await publishJobs(nc, [{ id: "raw", subject: "jobs.resize", data: new TextEncoder().encode('{"id":"not a key","task":"resize"}') }]);
    await waitFor("dead-lettered", () => t.outcomes.length === 1);
    expect(t.outcomes[0]).toMatchObject({ kind: "dead_lettered", ctx: { delivery: 1 } });
    expect((t.outcomes[0] as { reason: string }).reason).toMatch(/^malformed payload: job id "not a key" cannot be a status key/);
  });

  it("never rewrites an existing consumer's retry policy: a setup with another one refuses in one line", async () => {
    const other: RetryPolicy = { backoffMs: [2_000, 10_000], maxDeliver: 7 };
    await expect(setup(jsm, other)).rejects.toThrow(
      /^consumer workers on JOBS exists with max_deliver=6 but this pattern needs max_deliver=9/,
    );
    const { config } = await jsm.consumers.info(STREAM, CONSUMER);
    expect([config.max_deliver, config.ack_wait]).toEqual([retry.maxDeliver + GRACE_DELIVERIES, retry.ackWaitMs! * 1_000_000]);
  });

  it("stores a job published twice with the same id once", async () => {
    const first = await publishJobs(nc, jobsNamed("dup", 5));
    const again = await publishJobs(nc, jobsNamed("dup", 5));
    expect(first).toMatchObject({ stored: 5, duplicates: 0, failed: 0 });
    expect(again).toMatchObject({ stored: 0, duplicates: 5, failed: 0 });
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(5);
  });
});

// In this file rather than its own: on a server given by NATS_URL, test files run side by side and
// would share the JOBS streams. Each test starts from fresh streams (beforeEach above).
describe("dead-letter operations (src/dlq.ts, pnpm run dlq)", () => {
  const dlq = (args: string[]) => tool("src/dlq.ts", args);
  /** A dead letter as a worker leaves it (published to the DLQ with its headers), for tests without workers. */
  const deadLettered = async (id: string, seq: number) => {
    const job = encodeJob({ id, task: "resize" });
    await deadLetter(jetstream(nc), { subject: job.subject, seq, deliveries: 4, reason: "boom", by: "test", data: job.data });
  };

  it("lists a dead letter with its reason, and a requeued job, its cause fixed, ends processed: the DLQ empty, nothing lost", async () => {
    let fixed = false;
    const t = tally();
    const handler: Handler = async (job) => {
      if (job.id.startsWith("needs-fix") && !fixed) throw new Error("the image service is down");
    };
    await spawnWorkers(1, handler, t.onOutcome);
    await publishJobs(nc, [...jobsNamed("needs-fix", 2), ...jobsNamed("fine", 3)]);
    await waitFor("2 dead-lettered, 3 processed", () => t.ids("dead_lettered").length === 2 && t.ids("processed").length === 3);
    // The two fail on their own backoff schedules: either can reach the DLQ first.
    const letters = (await listDeadLetters(jsm)).sort((a, b) => String(a.id).localeCompare(String(b.id)));
    expect(letters.map((d) => [d.id, d.subject])).toEqual([
      ["needs-fix-0", "jobs.resize"],
      ["needs-fix-1", "jobs.resize"],
    ]);
    for (const d of letters)
      expect(failedEveryTry(d.deliveries, d.reason, /the image service is down/), `${d.id}: ${d.deliveries} deliveries, ${d.reason}`).toBe(
        true,
      );
    const listed = await dlq(["list"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/2 dead letter\(s\) in JOBS_DLQ/);
    expect(listed.stdout.split("\n").find((line) => line.includes("needs-fix-0 "))).toContain(letters[0]!.reason);

    fixed = true;
    const requeued = await dlq(["requeue", "--all"]);
    expect(requeued.code, requeued.stderr).toBe(0);
    expect(requeued.stdout).toMatch(/2 requeued; 0 left in JOBS_DLQ/);
    await waitFor("the requeued jobs processed", () => t.ids("processed").length === 5);
    expect(t.ids("processed").sort()).toEqual(["fine-0", "fine-1", "fine-2", "needs-fix-0", "needs-fix-1"]);
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    await waitFor("the work stream drained", async () => (await jsm.streams.info(STREAM)).state.messages === 0);
  });

  it("queues a job once when a requeue crashed between the publish and the delete and is run again", async () => {
    await deadLettered("again", 7);
    const [letter] = await listDeadLetters(jsm);
    const js = jetstream(nc);
    const crash = async () => {
      throw new Error("crashed before the delete");
    };
    await expect(requeue(js, jsm, letter!.seq, { beforeDelete: crash })).rejects.toThrow(/crashed/);
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(1); // not lost: still in the DLQ
    const again = await requeue(js, jsm, letter!.seq);
    expect(again).toMatchObject({ subject: "jobs.resize", duplicate: true });
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    const queued = await storedMessages(jsm, STREAM);
    expect(queued.map((m) => m.json<{ id: string }>().id)).toEqual(["again"]);
    expect(queued[0]!.header.get(DlqHeaders.Reason)).toBe(""); // the DLQ's notes stay behind
  });

  it("refuses to requeue a dead letter whose Dlq-Subject is not its own job subject, publishing nothing", async () => {
    await publishJobs(nc, jobsNamed("bystander", 3));
    // Anyone who may publish to dlq.jobs.> can write the headers: here one that names the purge API.
    for (const forged of ["$JS.API.STREAM.PURGE.JOBS", "jobs.other", "elsewhere"]) {
      const h = headers();
      h.set(DlqHeaders.Subject, forged);
      h.set(DlqHeaders.Reason, "forged");
      await jetstream(nc).publish("dlq.jobs.resize", new TextEncoder().encode("{}"), { headers: h }); // a valid purge request
    }
    for (const seq of [1, 2, 3]) {
      const r = await dlq(["requeue", String(seq)]);
      expect(r.code, r.stdout).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(new RegExp(`^error: dead letter ${seq} names Dlq-Subject ".+", not its own jobs.resize: not requeued`)),
      ]);
    }
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(3); // nothing purged, nothing added
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(3); // the letters stay for a person to look at
  });

  it("refuses to purge without --yes when not in a terminal, in one line, and purges with it", async () => {
    await deadLettered("drop-me", 3);
    const refused = await dlq(["purge"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^error: purge drops every dead letter: pass --yes/)]);
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(1);
    const purged = await dlq(["purge", "--yes"]);
    expect(purged.code, purged.stderr).toBe(0);
    expect(purged.stdout).toMatch(/purged 1 dead letter/);
    expect((await jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
  });

  it("says in one line what is wrong with a command, a sequence or a missing dead letter", async () => {
    for (const [args, line] of [
      [["frob"], /^error: unknown command "frob"/],
      [["show", "x"], /^error: a dead letter's sequence is a positive integer, got "x"/],
      [["show", "99"], /^error: no dead letter at sequence 99 in JOBS_DLQ/],
      [["requeue"], /^error: requeue takes sequences or --all/],
    ] as const) {
      const r = await dlq([...args]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([expect.stringMatching(line)]);
    }
  });
});

// Here too, for the same reason: the JOBS streams are shared on a server given by NATS_URL.
describe("job status, progress and results (src/status.ts)", () => {
  let status: StatusStore;
  beforeEach(async () => {
    await jsm.streams.delete(`KV_${STATUS_BUCKET}`).catch(() => {});
    status = await setupStatus(nc);
  });
  /** Queues jobs the way a caller that wants their status does: the status first, then the job. */
  const queue = async (jobs: Outgoing[]) => {
    for (const j of jobs) await markQueued(status, j.id);
    await publishJobs(nc, jobs);
  };

  it("gives a waiting client the job's result once it is done, and every progress update in order", async () => {
    const t = tally();
    await spawnWorkers(
      1,
      async (job, ctx) => {
        for (const p of [0.25, 0.5, 0.75]) {
          await sleep(20);
          await ctx.progress(p);
        }
        return { thumbnail: `${job.id}.png` };
      },
      t.onOutcome,
      "w",
      { status },
    );
    const [job] = jobsNamed("report", 1);
    await markQueued(status, job!.id);
    const seen: JobStatus[] = [];
    const result = waitForResult(status, job!.id, 15_000, (s) => seen.push(s));
    await waitFor("the watch saw queued", () => seen.length === 1); // it is set up: nothing can slip by
    await publishJobs(nc, [job!]);
    expect(await result).toMatchObject({ state: "done", result: { thumbnail: "report-0.png" } });
    expect(seen.map((s) => (s.state === "running" ? `running ${s.progress ?? 0}` : s.state))).toEqual([
      "queued",
      "running 0",
      "running 0.25",
      "running 0.5",
      "running 0.75",
      "done",
    ]);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done" }); // and it stays
  });

  it("reports a job that dies as dead-lettered with its reason; requeued once fixed, it ends done", async () => {
    let fixed = false;
    const t = tally();
    await spawnWorkers(
      1,
      async () => {
        if (!fixed) throw new Error("the image service is down");
        return "ok";
      },
      t.onOutcome,
      "w",
      { status },
    );
    const [job] = jobsNamed("doomed", 1);
    await queue([job!]);
    const dead = await waitForResult(status, job!.id, 15_000);
    expect(dead).toMatchObject({ state: "dead_lettered" });
    const [letter] = await listDeadLetters(jsm);
    const reason = (dead as { reason?: string }).reason;
    expect(reason).toBe(letter!.reason); // the status says why, as the DLQ does
    const cause = new RegExp(`^failed on delivery ${retry.maxDeliver} of ${retry.maxDeliver}: the image service is down$`);
    expect(failedEveryTry(letter!.deliveries, reason, cause), `${letter!.deliveries} deliveries, ${reason}`).toBe(true);
    fixed = true;
    await requeue(jetstream(nc), jsm, letter!.seq, { status }); // resets the status to queued first
    expect(await waitForResult(status, job!.id, 15_000)).toMatchObject({ state: "done", result: "ok" });
  });

  it("does not dead-letter a job whose last try succeeded but whose ack was lost: its status done stands for the ack", async () => {
    const [job] = jobsNamed("lost-ack", 1);
    await queue([job!]);
    let runs = 0;
    const handler: Handler = async (_job, ctx) => {
      runs++;
      if (ctx.delivery < retry.maxDeliver) throw new Error("not yet");
    };
    // The first worker records done on the last try, and its connection dies before the ack goes out.
    const [dying] = await spawnWorkers(1, handler, () => {}, "dying", { status: afterDone(status, () => dying!.close()) });
    await waitFor("the worker's connection died after done", () => dying!.isClosed(), { timeoutMs: 15_000 });
    await spawnWorkers(1, handler, () => {}, "survivor", { status });
    await waitFor("the job left the queue", async () => (await jsm.streams.info(STREAM)).state.messages === 0, { timeoutMs: 15_000 });
    expect(runs).toBe(retry.maxDeliver);
    expect(await dlqMessages()).toEqual([]);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done" });
  });

  it("acks a job that succeeded once even when its result cannot be recorded: never run again, never dead-lettered", async () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const results: Record<string, unknown> = { bigint: 10n, circular, huge: "x".repeat(2 * 1024 * 1024) };
    const jobs = Object.keys(results).map((id) => encodeJob({ id, task: "resize" }));
    await queue(jobs);
    const t = tally();
    const runs = new Map<string, number>();
    const handler: Handler = async (job) => {
      runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
      return results[job.id];
    };
    await spawnWorkers(1, handler, t.onOutcome, "w", { status });
    await waitFor("all three processed", () => t.ids("processed").length === 3);
    await sleep(retry.backoffMs.at(-1)! + 200); // a retry or a dead-lettering would show up now
    expect(Object.fromEntries(runs)).toEqual({ bigint: 1, circular: 1, huge: 1 });
    expect(t.outcomes.map((o) => o.kind)).toEqual(["processed", "processed", "processed"]);
    expect(await dlqMessages()).toEqual([]);
    for (const id of Object.keys(results))
      expect(await getStatus(status, id), id).toMatchObject({ state: "done", resultError: expect.stringMatching(/.+/) });
  });

  it("holds a job while its done status is written, however long that takes: the handler runs once", async () => {
    const [job] = jobsNamed("slow-status", 1);
    await queue([job!]);
    let runs = 0;
    let slow = true;
    const slowOnce = beforeDone(status, async () => {
      if (!slow) return;
      slow = false;
      await sleep(2.5 * retry.ackWaitMs!); // the KV answering late: past ack_wait, twice over
    });
    const t = tally();
    await spawnWorkers(2, async () => void runs++, t.onOutcome, "w", { status: slowOnce });
    await waitFor("the job processed", () => t.ids("processed").length === 1, { timeoutMs: 15_000 });
    await sleep(retry.ackWaitMs! + 200); // a redelivery would show up now
    expect(runs).toBe(1);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done" });
  });

  it("keeps a job's result when writing its done status failed once for a passing reason", async () => {
    const [job] = jobsNamed("flaky-status", 1);
    await queue([job!]);
    let failed = false;
    const failingOnce = beforeDone(status, async () => {
      if (failed) return;
      failed = true;
      throw new Error("TIMEOUT"); // as a KV write without an answer in time fails
    });
    const t = tally();
    await spawnWorkers(1, async () => ({ rows: 3 }), t.onOutcome, "w", { status: failingOnce });
    await waitFor("the job processed", () => t.ids("processed").length === 1, { timeoutMs: 15_000 });
    expect(failed).toBe(true);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done", result: { rows: 3 } });
  });

  it("never goes backwards: a late redelivery of a done job is acked without running it, the status stays done", async () => {
    const [job] = jobsNamed("late", 1);
    await markQueued(status, job!.id);
    await advance(status, job!.id, { state: "done", at: Date.now(), result: 1 });
    expect(await advance(status, job!.id, { state: "running", at: Date.now(), worker: "x", delivery: 2 })).toMatchObject({ state: "done" });
    expect(await advance(status, job!.id, { state: "queued", at: Date.now() })).toMatchObject({ state: "done" });
    let ran = 0;
    await spawnWorkers(
      1,
      async () => void ran++,
      () => {},
      "w",
      { status },
    );
    await publishJobs(nc, [job!]); // as if its ack had been lost and it came again
    await waitFor("the job acked", async () => (await jsm.streams.info(STREAM)).state.messages === 0);
    expect(ran).toBe(0);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done", result: 1 });
  });

  // Seen in CI (2.9.10, the service test "hands back, at its stop deadline, …"): the worker that handed
  // the job back still ran its handler, and its progress overwrote the new holder's running status.
  it("keeps the newest delivery's running status: progress from a worker that no longer holds the job does not overwrite it", async () => {
    const [job] = jobsNamed("moved", 1);
    const running = (worker: string, seq: number, delivery: number, progress?: number) =>
      ({ state: "running", at: Date.now(), worker, seq, delivery, progress }) as const;
    await markQueued(status, job!.id);
    await advance(status, job!.id, running("x", 10, 1));
    await advance(status, job!.id, running("y", 10, 2));
    expect(await advance(status, job!.id, running("x", 10, 1, 0.5))).toMatchObject({ worker: "y", delivery: 2 });
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "running", worker: "y", delivery: 2 });
    // The holder's own progress still moves it on.
    await advance(status, job!.id, running("y", 10, 2, 0.7));
    expect(await getStatus(status, job!.id)).toMatchObject({ worker: "y", delivery: 2, progress: 0.7 });
    // The same job published again (a later message: its deliveries start at 1 again) is the newer one,
    // and the handler still running for the earlier message is the older, whatever its delivery count.
    await advance(status, job!.id, running("z", 25, 1));
    expect(await getStatus(status, job!.id)).toMatchObject({ worker: "z", seq: 25, delivery: 1 });
    expect(await advance(status, job!.id, running("y", 10, 2, 0.9))).toMatchObject({ worker: "z", seq: 25 });
  });

  // From a cold review: a requeue while the older message's handler hangs, then that handler ends.
  it("keeps a newer message's run when the older message's handler ends after a requeue", async () => {
    const [job] = jobsNamed("requeued-late", 1);
    await markQueued(status, job!.id);
    await advance(status, job!.id, { state: "running", at: Date.now(), worker: "x", seq: 10, delivery: 5 });
    await advance(status, job!.id, { state: "queued", at: Date.now() }); // as requeue resets it
    await advance(status, job!.id, { state: "running", at: Date.now(), worker: "y", seq: 30, delivery: 1 });
    const late = { state: "dead_lettered" as const, at: Date.now(), reason: "failed on delivery 5 of 5", seq: 10 };
    expect(await advance(status, job!.id, late)).toMatchObject({ state: "running", worker: "y", seq: 30 });
    expect(await advance(status, job!.id, { state: "done", at: Date.now(), result: "ok", seq: 30 })).toMatchObject({ state: "done" });
  });

  it("leaves a finished job's status alone when its requeue is run again (the publish a duplicate)", async () => {
    const twice = encodeJob({ id: "twice", task: "resize" });
    await deadLetter(jetstream(nc), { subject: twice.subject, seq: 7, deliveries: 4, reason: "boom", by: "test", data: twice.data });
    const [letter] = await listDeadLetters(jsm);
    const js = jetstream(nc);
    const crash = async () => {
      throw new Error("crashed before the delete");
    };
    await expect(requeue(js, jsm, letter!.seq, { beforeDelete: crash, status })).rejects.toThrow(/crashed/);
    await advance(status, "twice", { state: "done", at: Date.now(), result: "ok" }); // the requeued job ran
    expect(await requeue(js, jsm, letter!.seq, { status })).toMatchObject({ duplicate: true });
    expect(await getStatus(status, "twice")).toMatchObject({ state: "done", result: "ok" });
  });

  it("lets a final status expire: per entry (a TTL on the final write) on 2.11+, by the bucket's max age before", async () => {
    const [job] = jobsNamed("kept", 1);
    await markQueued(status, job!.id);
    await advance(status, job!.id, { state: "done", at: Date.now() });
    const last = await jsm.streams.getMessage(`KV_${STATUS_BUCKET}`, { last_by_subj: `$KV.${STATUS_BUCKET}.${job!.id}` });
    const { config } = await jsm.streams.info(`KV_${STATUS_BUCKET}`);
    if (perKeyTtl(nc.info?.version)) {
      expect(last!.header.get("Nats-TTL")).toBe("3600s");
      expect(config.allow_msg_ttl).toBe(true);
      expect(config.max_age).toBe(0);
    } else {
      expect(last!.header.get("Nats-TTL")).toBe("");
      expect(config.max_age).toBe(3_600_000 * 1_000_000); // nanoseconds
    }
  });
});

// Here too: on a server given by NATS_URL, the JOBS streams are shared.
describe("the worker service (src/service.ts, a starter's npm start)", () => {
  // The service sets up the consumer with the production retry policy, as on a server of its own.
  beforeEach(() => jsm.consumers.delete(STREAM, CONSUMER));
  /** A service process; `ids` collects the jobs it reports processed (JSON log lines). */
  const service = (name: string, env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      env: { ...process.env, NATS_URL: server.url, LOG_FORMAT: "json", WORKER_NAME: name, WORKER_CONCURRENCY: "4", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const ids: string[] = [];
    let serving = false;
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    createInterface({ input: child.stdout }).on("line", (l) => {
      const line = JSON.parse(l) as { msg: string; id?: string };
      if (line.msg === "serving") serving = true;
      if (line.msg === "processed") ids.push(line.id!);
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, ids, exited, serving: () => serving, stderr: () => stderr };
  };
  const slowJobs = (prefix: string, n: number) =>
    Array.from({ length: n }, (_, i) => encodeJob({ id: `${prefix}-${i}`, task: "resize", input: { ms: 25 } }));

  it("shares a backlog between two instances; SIGTERM stops one within its deadline with exit 0, the other finishes: nothing lost", async () => {
    const health = await freePort();
    const [a, b] = [service("a", { STOP_DEADLINE_MS: "3000" }), service("b", { HEALTH_PORT: String(health) })];
    try {
      await waitFor("both services serving", () => a.serving() && b.serving(), { timeoutMs: 20_000 });
      const jobs = slowJobs("svc", 300);
      await publishJobs(nc, jobs);
      await waitFor("both took jobs", () => a.ids.length >= 20 && b.ids.length >= 20, { timeoutMs: 20_000 });
      const health200 = await fetch(`http://127.0.0.1:${health}/healthz`);
      expect(health200.status).toBe(200);
      expect(await health200.json()).toMatchObject({ ok: true, pending: expect.any(Number), in_progress: expect.any(Number) });
      const killedAt = Date.now();
      a.child.kill("SIGTERM");
      expect(await a.exited, a.stderr()).toBe(0);
      expect(Date.now() - killedAt).toBeLessThan(3_000 + 2_000); // the deadline, and time to close
      await waitFor("every job processed", () => new Set([...a.ids, ...b.ids]).size === jobs.length, { timeoutMs: 30_000 });
      await waitFor("the work stream drained", async () => (await jsm.streams.info(STREAM)).state.messages === 0);
      expect(a.ids.length).toBeLessThan(jobs.length); // b did the rest
      b.child.kill("SIGINT"); // Ctrl-C is a clean stop too
      expect(await b.exited, b.stderr()).toBe(0);
    } finally {
      for (const s of [a, b]) if (s.child.exitCode === null) s.child.kill("SIGKILL");
    }
  });

  it("hands back, at its stop deadline, a job it cannot finish: another instance takes it at once, not after its backoff", async () => {
    // JOB_STATUS=1: b's "running" entry says when it took the job and on which delivery.
    const stopFast = { STOP_DEADLINE_MS: "300", JOB_STATUS: "1" }; // either may be the one that holds it
    const [a, b] = [service("a", stopFast), service("b", stopFast)];
    try {
      await waitFor("both serving", () => a.serving() && b.serving(), { timeoutMs: 20_000 });
      const status = await openStatus(nc);
      await publishJobs(nc, [encodeJob({ id: "long", task: "resize", input: { ms: 20_000 } })]);
      await waitFor("someone holds the job", async () => (await getStatus(status, "long"))?.state === "running");
      const holder = (await getStatus(status, "long")) as Extract<JobStatus, { state: "running" }>;
      const [first, other] = holder.worker === "a" ? [a, b] : [b, a];
      first.child.kill("SIGTERM");
      expect(await first.exited, first.stderr()).toBe(0);
      const exitedAt = Date.now();
      await waitFor("the other took it", async () => {
        const s = await getStatus(status, "long");
        return s?.state === "running" && s.worker !== holder.worker;
      });
      const taken = (await getStatus(status, "long")) as Extract<JobStatus, { state: "running" }>;
      // On 2.9 the count can go backwards: the hand-back lands after a failed delivery (a pull whose
      // listener had gone), and the server moved its position back (nats-server#5305, fixed in 2.10.14:
      // see the README), so the next delivery says 1 again.
      const counts = versionAtLeast(nc.info?.version, "2.10.0") ? [2] : [1, 2];
      expect(counts, JSON.stringify({ holder, taken, first: first.stderr() })).toContain(taken.delivery);
      // Handed back before the first one exited, so taken by then (give or take a moment). A job left
      // in hand would come back only after its ack_wait: 2s after that worker's last sign of life,
      // which is at most stop deadline + a pull's end (1.3s) before it exits, so 0.7s after at least.
      expect(taken.at - exitedAt).toBeLessThan(400);
      other.child.kill("SIGKILL");
    } finally {
      for (const s of [a, b]) if (s.child.exitCode === null) s.child.kill("SIGKILL");
    }
  });
});

describe("pausing and resuming the workers' consumer (src/control.ts, pnpm run pause / resume)", () => {
  const control = (args: string[]) => tool("src/control.ts", args);

  it("holds every job while paused (2.11+) and delivers them after a resume; refuses in one line before 2.11", async () => {
    const version = nc.info?.version;
    if (!versionAtLeast(version, "2.11.0")) {
      await expect(pauseWorkers(jsm, version)).rejects.toThrow(`pausing a consumer needs nats-server >= 2.11; this server is ${version}`);
      const r = await control(["pause"]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([`error: pausing a consumer needs nats-server >= 2.11; this server is ${version}`]);
      return;
    }
    const t = tally();
    await spawnWorkers(1, async () => {}, t.onOutcome);
    const paused = await control(["pause", "5"]);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toMatch(/^paused JOBS\/workers until /);
    expect((await jsm.consumers.info(STREAM, CONSUMER)).paused).toBe(true);
    await publishJobs(nc, jobsNamed("held", 3));
    await sleep(1_500);
    expect(t.ids("processed")).toEqual([]); // queued, not delivered
    expect((await jsm.streams.info(STREAM)).state.messages).toBe(3);
    await resumeWorkers(jsm, version);
    await waitFor("the held jobs processed", () => t.ids("processed").length === 3);
  });
});
