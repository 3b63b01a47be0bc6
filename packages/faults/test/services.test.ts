// Every pattern's service (src/service.ts, a starter's `npm start`) as it is deployed: two instances of
// it, work fed from a third process, one instance stopped with SIGTERM while there is work, the other
// SIGINT at the end. Both exit 0, and every piece of work is done (at least once) by one of them.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { freePort, type NatsServer, repoRoot, serviceChecks, startServer, waitFor } from "@repo/harness";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let server: NatsServer;
let bank: string;
beforeAll(async () => {
  server = await startServer();
  bank = mkdtempSync(join(tmpdir(), "jsp-bank-"));
});
afterAll(async () => {
  await server?.stop();
  rmSync(bank, { recursive: true, force: true });
});

function instance(pattern: string, name: string, msg: string, extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
    cwd: join(repoRoot, "patterns", pattern),
    env: {
      ...process.env,
      NATS_URL: server.url,
      LOG_FORMAT: "json",
      WORKER_NAME: name,
      BANK_DIR: bank,
      STOP_DEADLINE_MS: "5000",
      ...extra,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const state = { serving: false, done: 0, stderr: "" };
  child.stderr.on("data", (d) => (state.stderr += d));
  createInterface({ input: child.stdout }).on("line", (l) => {
    const line = JSON.parse(l) as { msg: string };
    if (line.msg === "serving") state.serving = true;
    if (line.msg === msg) state.done++;
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { child, state, exited };
}

describe("each pattern's service: two instances, fed from outside, stopped with SIGTERM and SIGINT", () => {
  for (const [pattern, check] of Object.entries(serviceChecks)) {
    it(`${pattern}: both exit 0 and the work fed is done (${check.count} × "${check.msg}")`, async () => {
      // A service that listens gets a port each; the feed talks to the first.
      const ports = check.listen ? [await freePort(), await freePort()] : [];
      const listen = (i: number): Record<string, string> => (check.listen ? { [check.listen.port]: String(ports[i]) } : {});
      const [a, b] = [instance(pattern, "a", check.msg, listen(0)), instance(pattern, "b", check.msg, listen(1))];
      try {
        await waitFor("both serving", () => a.state.serving && b.state.serving, { timeoutMs: 30_000 });
        const feed = spawnSync(process.execPath, ["--import", "tsx", ...check.feed], {
          cwd: join(repoRoot, "patterns", pattern),
          env: { ...process.env, NATS_URL: server.url, ...(check.listen ? { [check.listen.url]: `http://127.0.0.1:${ports[0]}` } : {}) },
          encoding: "utf8",
          timeout: 60_000,
        });
        expect(feed.status, feed.stderr).toBe(0);
        await waitFor("some work done", () => a.state.done + b.state.done > 0, { timeoutMs: 30_000 });
        a.child.kill("SIGTERM");
        expect(await a.exited, a.state.stderr).toBe(0);
        await waitFor(`${check.count} done`, () => a.state.done + b.state.done >= check.count, { timeoutMs: 30_000 });
        b.child.kill("SIGINT");
        expect(await b.exited, b.state.stderr).toBe(0);
      } finally {
        for (const s of [a, b]) if (s.child.exitCode === null) s.child.kill("SIGKILL");
      }
    });
  }
});
