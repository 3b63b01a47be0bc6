// Job status, progress and results (src/status/): what a waiting client sees, and that a status is
// never a reason to run a job again or to dead-letter one that succeeded.
import { jetstream } from "@nats-io/jetstream";
import { sleep, waitFor } from "@repo/harness";
import { beforeEach, describe, expect, it } from "vitest";
import { deadLetter } from "../src/dead-letter.js";
import { listDeadLetters, requeue } from "../src/ops/dlq.js";
import { encodeJob, type Outgoing, publishJobs } from "../src/producer.js";
import { STREAM } from "../src/setup.js";
import {
  advance,
  getStatus,
  type JobStatus,
  markQueued,
  perKeyTtl,
  STATUS_BUCKET,
  type StatusStore,
  setupStatus,
  waitForResult,
} from "../src/status/status.js";
import type { Handler } from "../src/worker.js";
import { afterDone, beforeDone, dlqMessages, e2e, failedEveryTry, jobsNamed, retry, spawnWorkers, tally } from "./queue.js";

describe("job status, progress and results (src/status/)", () => {
  let status: StatusStore;
  beforeEach(async () => {
    await e2e.jsm.streams.delete(`KV_${STATUS_BUCKET}`).catch(() => {});
    status = await setupStatus(e2e.nc);
  });
  /** Queues jobs the way a caller that wants their status does: the status first, then the job. */
  const queue = async (jobs: Outgoing[]) => {
    for (const j of jobs) await markQueued(status, j.id);
    await publishJobs(e2e.nc, jobs);
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
    await publishJobs(e2e.nc, [job!]);
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
    const [letter] = await listDeadLetters(e2e.jsm);
    const reason = (dead as { reason?: string }).reason;
    expect(reason).toBe(letter!.reason); // the status says why, as the DLQ does
    const cause = new RegExp(`^failed on delivery ${retry.maxDeliver} of ${retry.maxDeliver}: the image service is down$`);
    expect(failedEveryTry(letter!.deliveries, reason, cause), `${letter!.deliveries} deliveries, ${reason}`).toBe(true);
    fixed = true;
    await requeue(jetstream(e2e.nc), e2e.jsm, letter!.seq, { status }); // resets the status to queued first
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
    await waitFor("the job left the queue", async () => (await e2e.jsm.streams.info(STREAM)).state.messages === 0, { timeoutMs: 15_000 });
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
    await publishJobs(e2e.nc, [job!]); // as if its ack had been lost and it came again
    await waitFor("the job acked", async () => (await e2e.jsm.streams.info(STREAM)).state.messages === 0);
    expect(ran).toBe(0);
    expect(await getStatus(status, job!.id)).toMatchObject({ state: "done", result: 1 });
  });

  // A worker that handed a job back (a stop deadline) still runs its handler, which JavaScript cannot stop.
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

  // A requeue while the older message's handler hangs, then that handler ends.
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
    await deadLetter(jetstream(e2e.nc), { subject: twice.subject, seq: 7, deliveries: 4, reason: "boom", by: "test", data: twice.data });
    const [letter] = await listDeadLetters(e2e.jsm);
    const js = jetstream(e2e.nc);
    const crash = async () => {
      throw new Error("crashed before the delete");
    };
    await expect(requeue(js, e2e.jsm, letter!.seq, { beforeDelete: crash, status })).rejects.toThrow(/crashed/);
    await advance(status, "twice", { state: "done", at: Date.now(), result: "ok" }); // the requeued job ran
    expect(await requeue(js, e2e.jsm, letter!.seq, { status })).toMatchObject({ duplicate: true });
    expect(await getStatus(status, "twice")).toMatchObject({ state: "done", result: "ok" });
  });

  it("lets a final status expire: per entry (a TTL on the final write) on 2.11+, by the bucket's max age before", async () => {
    const [job] = jobsNamed("kept", 1);
    await markQueued(status, job!.id);
    await advance(status, job!.id, { state: "done", at: Date.now() });
    const last = await e2e.jsm.streams.getMessage(`KV_${STATUS_BUCKET}`, { last_by_subj: `$KV.${STATUS_BUCKET}.${job!.id}` });
    const { config } = await e2e.jsm.streams.info(`KV_${STATUS_BUCKET}`);
    if (perKeyTtl(e2e.nc.info?.version)) {
      expect(last!.header.get("Nats-TTL")).toBe("3600s");
      expect(config.allow_msg_ttl).toBe(true);
      expect(config.max_age).toBe(0);
    } else {
      expect(last!.header.get("Nats-TTL")).toBe("");
      expect(config.max_age).toBe(3_600_000 * 1_000_000); // nanoseconds
    }
  });
});
