// The e2e matrix: every workspace package's tests against every nats-server version in the cache,
// one run at a time, then a table of package × version and a closing "N passed, N failed" line.
//   pnpm test                              # everything
//   pnpm test work-queue --versions 2.9.10 # a slice
//   MATRIX_SKIP=chaos pnpm test            # all but the named packages (comma-separated)
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { cachedVersions, repoRoot } from "./binary.js";

interface Cell {
  project: string;
  version: string;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  ok: boolean;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { versions: { type: "string" } },
});

const provision = spawnSync("bash", [join(repoRoot, "packages/harness/bin/provision-nats-server.sh")], { stdio: "inherit" });
if (provision.status !== 0) {
  process.stderr.write("error: could not provision nats-server binaries (see above)\n");
  process.exit(1);
}
const skip = (process.env.MATRIX_SKIP ?? "").split(",").filter(Boolean);
const versions = values.versions ? values.versions.split(",") : cachedVersions();

// Test projects: the patterns, then packages/* (the harness's CLI tests, the fault suite).
const projects = ["patterns", "packages"].flatMap((dir) =>
  readdirSync(join(repoRoot, dir))
    .sort()
    .filter((name) => existsSync(join(repoRoot, dir, name, "package.json")))
    .filter((name) => positionals.length === 0 || positionals.includes(name))
    .filter((name) => !skip.includes(name))
    .map((name) => ({
      name,
      dir: join(repoRoot, dir, name),
      pkg: JSON.parse(readFileSync(join(repoRoot, dir, name, "package.json"), "utf8")),
    }))
    .filter((p) => p.pkg.scripts?.test)
    // "matrix": {"versions": "newest"} runs a package on the newest server only (the fault suite).
    .map((p) => ({ name: p.name, dir: p.dir, newestOnly: p.pkg.matrix?.versions === "newest" })),
);
if (projects.length === 0) {
  process.stderr.write(`error: no test project matches ${positionals.join(", ")}\n`);
  process.exit(2);
}

const outDir = join(repoRoot, ".cache/test-results");
mkdirSync(outDir, { recursive: true });

function runOne(project: { name: string; dir: string }, version: string): Promise<Cell> {
  const json = join(outDir, `${project.name}-${version}.json`);
  const logFile = join(outDir, `${project.name}-${version}.log`);
  const env: NodeJS.ProcessEnv = { ...process.env, NATS_SERVER_VERSION: version, FORCE_COLOR: "0" };
  delete env.NATS_URL; // the matrix is about server versions: every test starts its own server
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn("pnpm", ["--silent", "run", "test", "--reporter=default", "--reporter=json", `--outputFile.json=${json}`], {
      cwd: project.dir,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.once("exit", (code) => {
      writeFileSync(logFile, output);
      let passed = 0;
      let failed = 0;
      let skipped = 0;
      if (existsSync(json)) {
        const r = JSON.parse(readFileSync(json, "utf8"));
        passed = r.numPassedTests;
        failed = r.numFailedTests;
        skipped = r.numPendingTests + (r.numTodoTests ?? 0);
      }
      const ok = code === 0 && failed === 0 && passed > 0;
      if (!ok && failed === 0) failed = 1; // the run itself broke (no server, syntax error, ...)
      resolve({ project: project.name, version, passed, failed, skipped, seconds: (Date.now() - started) / 1000, ok });
      if (!ok)
        process.stdout.write(
          `\n--- ${project.name} on ${version} failed; last lines of ${logFile}:\n${output.split("\n").slice(-60).join("\n")}\n`,
        );
    });
  });
}

const cells: Cell[] = [];
// MATRIX_NEWEST: the newest version of a matrix split over several machines (the GitHub workflow runs
// one version per job), so newest-only packages run in that job alone.
const newest = process.env.MATRIX_NEWEST ?? versions.at(-1);
for (const version of versions) {
  for (const project of projects) {
    if (project.newestOnly && version !== newest) continue;
    const cell = await runOne(project, version);
    cells.push(cell);
    const status = cell.ok ? "ok  " : "FAIL";
    process.stdout.write(
      `${status} ${project.name.padEnd(16)} nats-server ${version.padEnd(8)} ${cell.passed} passed, ${cell.failed} failed, ${cell.skipped} skipped (${cell.seconds.toFixed(1)}s)\n`,
    );
  }
}

const col = (s: string, w: number) => s.padEnd(w);
const width = Math.max(...projects.map((p) => p.name.length), 8) + 2;
const lines = [col("", width) + versions.map((v) => col(v, 14)).join("")];
for (const project of projects) {
  const row = versions.map((v) => {
    const c = cells.find((x) => x.project === project.name && x.version === v);
    return col(c ? `${c.ok ? "pass" : "FAIL"} ${c.passed}/${c.passed + c.failed}` : "-", 14);
  });
  lines.push(col(project.name, width) + row.join(""));
}
const passed = cells.reduce((n, c) => n + c.passed, 0);
const failed = cells.reduce((n, c) => n + c.failed, 0);
const skipped = cells.reduce((n, c) => n + c.skipped, 0);
process.stdout.write(
  `\n${lines.join("\n")}\n\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""} (Node ${process.version})\n`,
);
process.exit(failed === 0 && cells.every((c) => c.ok) ? 0 : 1);
