// The operator tools (src/ops/): the dead-letter commands and pausing the workers.
import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { sleep, waitFor } from "@repo/harness";
import { storedMessages, versionAtLeast } from "@repo/kit";
import { describe, expect, it } from "vitest";
import { DlqHeaders, deadLetter } from "../src/dead-letter.js";
import { pauseWorkers, resumeWorkers } from "../src/ops/control.js";
import { listDeadLetters, requeue } from "../src/ops/dlq.js";
import { encodeJob, publishJobs } from "../src/producer.js";
import { CONSUMER, DLQ_STREAM, STREAM } from "../src/setup.js";
import type { Handler } from "../src/worker.js";
import { e2e, failedEveryTry, jobsNamed, spawnWorkers, tally, tool } from "./queue.js";

describe("dead-letter operations (src/ops/dlq.ts, pnpm run dlq)", () => {
  const dlq = (args: string[]) => tool("src/ops/dlq.ts", args);
  /** A dead letter as a worker leaves it (published to the DLQ with its headers), for tests without workers. */
  const deadLettered = async (id: string, seq: number) => {
    const job = encodeJob({ id, task: "resize" });
    await deadLetter(jetstream(e2e.nc), { subject: job.subject, seq, deliveries: 4, reason: "boom", by: "test", data: job.data });
  };

  it("lists a dead letter with its reason, and a requeued job, its cause fixed, ends processed: the DLQ empty, nothing lost", async () => {
    let fixed = false;
    const t = tally();
    const handler: Handler = async (job) => {
      if (job.id.startsWith("needs-fix") && !fixed) throw new Error("the image service is down");
    };
    await spawnWorkers(1, handler, t.onOutcome);
    await publishJobs(e2e.nc, [...jobsNamed("needs-fix", 2), ...jobsNamed("fine", 3)]);
    await waitFor("2 dead-lettered, 3 processed", () => t.ids("dead_lettered").length === 2 && t.ids("processed").length === 3);
    // The two fail on their own backoff schedules: either can reach the DLQ first.
    const letters = (await listDeadLetters(e2e.jsm)).sort((a, b) => String(a.id).localeCompare(String(b.id)));
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
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    await waitFor("the work stream drained", async () => (await e2e.jsm.streams.info(STREAM)).state.messages === 0);
  });

  it("queues a job once when a requeue crashed between the publish and the delete and is run again", async () => {
    await deadLettered("again", 7);
    const [letter] = await listDeadLetters(e2e.jsm);
    const js = jetstream(e2e.nc);
    const crash = async () => {
      throw new Error("crashed before the delete");
    };
    await expect(requeue(js, e2e.jsm, letter!.seq, { beforeDelete: crash })).rejects.toThrow(/crashed/);
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(1); // not lost: still in the DLQ
    const again = await requeue(js, e2e.jsm, letter!.seq);
    expect(again).toMatchObject({ subject: "jobs.resize", duplicate: true });
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
    const queued = await storedMessages(e2e.jsm, STREAM);
    expect(queued.map((m) => m.json<{ id: string }>().id)).toEqual(["again"]);
    expect(queued[0]!.header.get(DlqHeaders.Reason)).toBe(""); // the DLQ's notes stay behind
  });

  it("refuses to requeue a dead letter whose Dlq-Subject is not its own job subject, publishing nothing", async () => {
    await publishJobs(e2e.nc, jobsNamed("bystander", 3));
    // Anyone who may publish to dlq.jobs.> can write the headers: here one that names the purge API.
    for (const forged of ["$JS.API.STREAM.PURGE.JOBS", "jobs.other", "elsewhere"]) {
      const h = headers();
      h.set(DlqHeaders.Subject, forged);
      h.set(DlqHeaders.Reason, "forged");
      await jetstream(e2e.nc).publish("dlq.jobs.resize", new TextEncoder().encode("{}"), { headers: h }); // a valid purge request
    }
    for (const seq of [1, 2, 3]) {
      const r = await dlq(["requeue", String(seq)]);
      expect(r.code, r.stdout).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(new RegExp(`^error: dead letter ${seq} names Dlq-Subject ".+", not its own jobs.resize: not requeued`)),
      ]);
    }
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(3); // nothing purged, nothing added
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(3); // the letters stay for a person to look at
  });

  it("refuses to purge without --yes when not in a terminal, in one line, and purges with it", async () => {
    await deadLettered("drop-me", 3);
    const refused = await dlq(["purge"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^error: purge drops every dead letter: pass --yes/)]);
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(1);
    const purged = await dlq(["purge", "--yes"]);
    expect(purged.code, purged.stderr).toBe(0);
    expect(purged.stdout).toMatch(/purged 1 dead letter/);
    expect((await e2e.jsm.streams.info(DLQ_STREAM)).state.messages).toBe(0);
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

describe("pausing and resuming the workers' consumer (src/ops/control.ts, pnpm run pause / resume)", () => {
  const control = (args: string[]) => tool("src/ops/control.ts", args);

  it("holds every job while paused (2.11+) and delivers them after a resume; refuses in one line before 2.11", async () => {
    const version = e2e.nc.info?.version;
    if (!versionAtLeast(version, "2.11.0")) {
      await expect(pauseWorkers(e2e.jsm, version)).rejects.toThrow(
        `pausing a consumer needs nats-server >= 2.11; this server is ${version}`,
      );
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
    expect((await e2e.jsm.consumers.info(STREAM, CONSUMER)).paused).toBe(true);
    await publishJobs(e2e.nc, jobsNamed("held", 3));
    await sleep(1_500);
    expect(t.ids("processed")).toEqual([]); // queued, not delivered
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(3);
    await resumeWorkers(e2e.jsm, version);
    await waitFor("the held jobs processed", () => t.ids("processed").length === 3);
  });
});
