// The queue itself: every job ends processed or dead-lettered once, retries keep their schedule, a
// worker that dies or stops loses nothing, and setup refuses what it must not change.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { sleep, waitFor } from "@repo/harness";
import { describe, expect, it } from "vitest";
import { DlqHeaders } from "../src/dead-letter.js";
import { encodeJob, type Outgoing, publishJobs } from "../src/producer.js";
import { CONSUMER, DLQ_STREAM, GRACE_DELIVERIES, type RetryPolicy, STREAM, setup } from "../src/setup.js";
import type { Handler } from "../src/worker.js";
import {
  countBy,
  dlqMessages,
  e2e,
  failedDeliveryCostsATry,
  failedEveryTry,
  jobsNamed,
  retry,
  spawnWorkers,
  tally,
  workers,
} from "./queue.js";

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
    const res = await publishJobs(e2e.nc, all);
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
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
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
    // The exact count of tries needs a server where a failed delivery costs none.
    if (failedDeliveryCostsATry()) ctx.skip();
    const t = tally();
    await spawnWorkers(
      2,
      async (_job, ctx) => {
        if (ctx.delivery < retry.maxDeliver) throw new Error(`transient failure ${ctx.delivery}`);
      },
      t.onOutcome,
    );
    await publishJobs(e2e.nc, jobsNamed("flaky", 3));
    // On failure, say what did happen to each job.
    const detail = () =>
      t.outcomes.map((o) => `${o.kind}:${o.job?.id ?? o.ctx.seq}@${o.ctx.delivery}${o.kind === "dead_lettered" ? ` (${o.reason})` : ""}`);
    await waitFor("3 flaky jobs processed", () => t.ids("processed").length === 3, { timeoutMs: 30_000, detail });
    expect(t.ids("dead_lettered")).toEqual([]);
    expect(t.ids("retry").length).toBe(3 * (retry.maxDeliver - 1));
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("retries a failing job on its schedule as written (0.3 s, 1.2 s, 2.4 s), measured, not the server's backoff sum", async () => {
    const schedule: RetryPolicy = { backoffMs: [300, 1_200, 2_400], maxDeliver: 4 };
    await e2e.jsm.consumers.delete(STREAM, CONSUMER);
    await setup(e2e.jsm, schedule);
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
    await publishJobs(e2e.nc, jobsNamed("timed", 1));
    await waitFor("dead-lettered after its tries", () => t.ids("dead_lettered").length === 1, { timeoutMs: 20_000 });
    const [dead] = await dlqMessages();
    expect(failedEveryTry(dead!.header.get(DlqHeaders.Deliveries), dead!.header.get(DlqHeaders.Reason), /always fails/)).toBe(true);
    const gaps = seen.slice(1).map((at, n) => Math.round(at - seen[n]!));
    // Where a failed delivery costs a try, only the first gaps are compared.
    const compared = failedDeliveryCostsATry() ? schedule.backoffMs.slice(0, gaps.length) : schedule.backoffMs;
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
    await publishJobs(e2e.nc, jobsNamed("jobs", 20));
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
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("redelivers the job of a worker process killed with SIGKILL mid-job, no earlier than ack_wait", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "test/worker-process.ts"], {
      env: {
        ...process.env,
        NATS_URL: e2e.server.url,
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
    await publishJobs(e2e.nc, jobsNamed("proc", 1));
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
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
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
    await publishJobs(e2e.nc, jobsNamed("drain", 30));
    await waitFor("the leaving worker holds a job", () => inHand !== "");
    const leaving = workers.pop()!;
    await leaving.stop();
    expect(t.ids("processed")).toContain(inHand);
    await spawnWorkers(2, async () => {}, t.onOutcome, "staying");
    await waitFor("all 30 processed", () => countBy(t.ids("processed")).size === 30, { timeoutMs: 20_000 });
    expect(t.ids("processed").length).toBe(30);
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("keeps pulling when its consumer is deleted and set up again: every job published after is processed, once", async () => {
    const t = tally();
    await spawnWorkers(2, async () => {}, t.onOutcome);
    await publishJobs(e2e.nc, jobsNamed("before", 5));
    await waitFor("the 5 jobs before processed", () => t.ids("processed").length === 5, { timeoutMs: 10_000 });
    await e2e.jsm.consumers.delete(STREAM, CONSUMER);
    // The workers' waiting pulls end with a 409 (no count of what never came), their next ones find no
    // consumer (503): each is forgotten after a pause and asked again.
    await sleep(1_500);
    await setup(e2e.jsm, retry);
    await publishJobs(e2e.nc, jobsNamed("after", 10));
    await waitFor("the 10 jobs after processed", () => t.ids("processed").length === 15, { timeoutMs: 15_000 });
    expect(countBy(t.ids("processed")).size).toBe(15);
    expect(t.ids("dead_lettered")).toEqual([]);
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("refuses an existing JOBS stream with the wrong retention, with a clear message", async () => {
    await e2e.jsm.streams.delete(STREAM);
    await e2e.jsm.streams.add({ name: STREAM, subjects: ["jobs.>"] });
    await expect(setup(e2e.jsm, retry)).rejects.toThrow(
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
    await publishJobs(e2e.nc, [
      { id: "raw", subject: "jobs.resize", data: new TextEncoder().encode('{"id":"not a key","task":"resize"}') },
    ]);
    await waitFor("dead-lettered", () => t.outcomes.length === 1);
    expect(t.outcomes[0]).toMatchObject({ kind: "dead_lettered", ctx: { delivery: 1 } });
    expect((t.outcomes[0] as { reason: string }).reason).toMatch(/^malformed payload: job id "not a key" cannot be a status key/);
  });

  it("never rewrites an existing consumer's retry policy: a setup with another one refuses in one line", async () => {
    const other: RetryPolicy = { backoffMs: [2_000, 10_000], maxDeliver: 7 };
    await expect(setup(e2e.jsm, other)).rejects.toThrow(
      /^consumer workers on JOBS exists with max_deliver=6 but this pattern needs max_deliver=9/,
    );
    const { config } = await e2e.jsm.consumers.info(STREAM, CONSUMER);
    expect([config.max_deliver, config.ack_wait]).toEqual([retry.maxDeliver + GRACE_DELIVERIES, retry.ackWaitMs! * 1_000_000]);
  });

  it("stores a job published twice with the same id once", async () => {
    const first = await publishJobs(e2e.nc, jobsNamed("dup", 5));
    const again = await publishJobs(e2e.nc, jobsNamed("dup", 5));
    expect(first).toMatchObject({ stored: 5, duplicates: 0, failed: 0 });
    expect(again).toMatchObject({ stored: 0, duplicates: 5, failed: 0 });
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(5);
  });
});
