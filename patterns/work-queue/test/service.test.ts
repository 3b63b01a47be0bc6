// The worker service, as a starter deploys it: started as its own process and stopped with SIGTERM.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { freePort, waitFor } from "@repo/harness";
import { beforeEach, describe, expect, it } from "vitest";
import { encodeJob, publishJobs } from "../src/producer.js";
import { CONSUMER, STREAM } from "../src/setup.js";
import { getStatus, type JobStatus, openStatus } from "../src/status/status.js";
import { e2e, failedDeliveryCostsATry } from "./queue.js";

describe("the worker service (src/service.ts, a starter's npm start)", () => {
  // The service sets up the consumer with the production retry policy, as on a server of its own.
  beforeEach(() => e2e.jsm.consumers.delete(STREAM, CONSUMER));
  /** A service process; `ids` collects the jobs it reports processed (JSON log lines). */
  const service = (name: string, env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      env: { ...process.env, NATS_URL: e2e.server.url, LOG_FORMAT: "json", WORKER_NAME: name, WORKER_CONCURRENCY: "4", ...env },
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
      await publishJobs(e2e.nc, jobs);
      await waitFor("both took jobs", () => a.ids.length >= 20 && b.ids.length >= 20, { timeoutMs: 20_000 });
      const health200 = await fetch(`http://127.0.0.1:${health}/healthz`);
      expect(health200.status).toBe(200);
      expect(await health200.json()).toMatchObject({ ok: true, pending: expect.any(Number), in_progress: expect.any(Number) });
      const killedAt = Date.now();
      a.child.kill("SIGTERM");
      expect(await a.exited, a.stderr()).toBe(0);
      expect(Date.now() - killedAt).toBeLessThan(3_000 + 2_000); // the deadline, and time to close
      await waitFor("every job processed", () => new Set([...a.ids, ...b.ids]).size === jobs.length, { timeoutMs: 30_000 });
      await waitFor("the work stream drained", async () => (await e2e.jsm.streams.info(STREAM)).state.messages === 0);
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
      const status = await openStatus(e2e.nc);
      await publishJobs(e2e.nc, [encodeJob({ id: "long", task: "resize", input: { ms: 20_000 } })]);
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
      // Where a failed delivery costs a try, the count can go backwards: the next delivery says 1 again.
      const counts = failedDeliveryCostsATry() ? [1, 2] : [2];
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
