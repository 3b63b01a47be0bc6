// runMain's exit: a run's summary is its last line, even when stdout is a pipe read slowly (a test,
// `| tee`, a log shipper). Every line logged before the exit is written, in the order logged.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { sleep } from "@repo/harness";
import { expect, it } from "vitest";

it("writes every log line, in order, before a run exits, with the summary last (stdout a slow pipe)", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures/many-lines.ts")], {
    env: { ...process.env, LOG_FORMAT: "json", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const closed = new Promise((resolve) => child.stdout.once("close", resolve));
  child.stdout.pause(); // the pipe fills: the child's writes wait (EAGAIN)
  await sleep(1_500);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stdout.resume();
  expect(await exited).toBe(0);
  await closed;
  const lines = out
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  expect(lines).toHaveLength(2_001);
  expect(lines.slice(0, -1).map((l) => l.i)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
  expect(lines.at(-1)).toMatchObject({ lines: 2_000, msg: "summary: lines=2000" });
});
