// `pnpm run new <pattern> <dir>`: copies a pattern out of the monorepo as a standalone project: its
// src/ with the shared kit (packages/kit/src) inlined as src/kit/ and the imports pointed there, a
// package.json with the versions this repo is tested with as ^ ranges (no workspace links), a tsconfig.json,
// its README (with what names the repo rewritten for a project on its own: forStarter) and a minimal
// test that runs the demo against NATS_URL and checks its accounting.
// Then in <dir>: `npm install && NATS_URL=nats://127.0.0.1:4222 npm test`, `npm start`.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { repoRoot } from "./binary.js";
import { patternNames } from "./patterns.js";
import { type ServiceCheck, serviceChecks } from "./services.js";

const usage =
  "usage: pnpm run new <pattern> <dir>   (writes a standalone copy of the pattern into <dir>, which must not exist or be empty)";

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

// Small, fast demo options for the starter's test (a pattern not listed runs its demo with its defaults).
const testArgs: Record<string, string[]> = {
  "work-queue": ["--jobs", "40"],
  fanout: ["--orders", "10"],
  "dedup-publish": ["--payments", "400", "--window-ms", "1000"],
  "ordered-replay": ["--events", "300"],
  "priority-queue": ["--tasks", "10"],
  "exactly-once": ["--charges", "40"],
  "event-sourcing": ["--writers", "3", "--withdrawals", "5"],
  "scheduled-jobs": ["--delay-ms", "1000", "--recurring-runs", "2"],
  "request-reply": ["--requests", "60"],
  partitioned: ["--keys", "10", "--events", "5"],
};

const [name, target] = process.argv.slice(2);
const names = patternNames();
if (name === "--help" || name === "-h") {
  process.stdout.write(`${usage}\npatterns: ${names.join(", ")}\n`);
  process.exit(0);
}
if (!name || !target) fail(`${usage}\npatterns: ${names.join(", ")}`);
if (!names.includes(name)) fail(`unknown pattern "${name}" — choose one of: ${names.join(", ")}`);
// pnpm runs scripts from the repo root; a relative dir means relative to where the user typed it.
const dir = resolve(process.env.INIT_CWD ?? process.cwd(), target);
if (existsSync(dir) && readdirSync(dir).length > 0)
  fail(`${dir} exists and is not empty — choose a new or empty directory (nothing was written)`);

const from = join(repoRoot, "patterns", name);
const hasService = existsSync(join(from, "src/service.ts"));
const kit = join(repoRoot, "packages/kit");
type Pkg = {
  description?: string;
  scripts?: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const readPkg = (dir: string) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as Pkg;
const pkg = readPkg(from);
/** The version installed in `where`, which is the one the matrix tested, as ^x.y.z. */
const installed = (dep: string, where = from) => {
  const file = join(where, "node_modules", dep, "package.json");
  if (!existsSync(file)) fail(`${dep} is not installed in ${where}: run "pnpm install" first`);
  return `^${(JSON.parse(readFileSync(file, "utf8")) as { version: string }).version}`;
};
// The pattern's own dependencies and the kit's, with the workspace link to the kit replaced by its copy.
const external = (p: Pkg) => Object.keys(p.dependencies).filter((d) => !p.dependencies[d]!.startsWith("workspace:"));
const deps = Object.fromEntries(
  [...external(readPkg(kit)).map((d) => [d, installed(d, kit)]), ...external(pkg).map((d) => [d, installed(d)])].sort(([a], [b]) =>
    String(a).localeCompare(String(b)),
  ),
);
const devDeps = Object.fromEntries(["@types/node", "tsx", "typescript", "vitest"].map((d) => [d, installed(d)]));

/** Copies the .ts files of `src` and its folders to `to`, with imports of the kit pointed at `kitPath`. */
function copySources(src: string, to: string, kitPath: string) {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(src, { withFileTypes: true })) {
    if (entry.isDirectory()) copySources(join(src, entry.name), join(to, entry.name), `../${kitPath.replace(/^\.\//, "")}`);
    else if (entry.name.endsWith(".ts")) {
      const text = readFileSync(join(src, entry.name), "utf8").replaceAll('from "@repo/kit"', `from "${kitPath}"`);
      writeFileSync(join(to, entry.name), text);
    }
  }
}
mkdirSync(join(dir, "test"), { recursive: true });
copySources(join(from, "src"), join(dir, "src"), "./kit/index.js");
copySources(join(kit, "src"), join(dir, "src/kit"), "./index.js");
const project =
  basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-") || name;
// A pattern with a service (src/service.ts, npm start): the starter's test also starts it, feeds it
// work from another process (serviceChecks: e.g. src/producer.ts) and stops it with SIGTERM, which
// must end in exit 0.
const serviceTest = (check: ServiceCheck) => `
it("serves work fed by another process with npm start's service, and exits 0 on SIGTERM", async () => {${
  check.listen
    ? `
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const listen = { ${check.listen.port}: String(port) };
  const target = { ${check.listen.url}: \`http://127.0.0.1:\${port}\` };`
    : `
  const [listen, target] = [{}, {}];`
}
  // Through the very entry a deployment uses: the build, then npm start, and SIGTERM to npm itself.
  const build = spawnSync("npm", ["run", "--silent", "build"], { encoding: "utf8" });
  expect(build.status, build.stdout + build.stderr).toBe(0);
  const service = spawn("npm", ["start", "--silent"], { env: { ...process.env, LOG_FORMAT: "json", ...listen }, stdio: ["ignore", "pipe", "inherit"] });
  let [serving, stopped, done, pid] = [false, false, 0, 0];
  createInterface({ input: service.stdout! }).on("line", (l) => {
    if (!l.startsWith("{")) return;
    const line = JSON.parse(l) as { msg: string; pid: number };
    if (line.msg === "serving") [serving, pid] = [true, line.pid];
    if (line.msg === "stopped") stopped = true;
    if (line.msg === ${JSON.stringify(check.msg)}) done++;
  });
  const exited = new Promise<number | null>((resolve) => service.once("exit", resolve));
  const alive = (p: number) => {
    try {
      return process.kill(p, 0);
    } catch {
      return false;
    }
  };
  try {
    for (let i = 0; i < 200 && !serving; i++) await new Promise((r) => setTimeout(r, 100));
    expect(serving).toBe(true);
    const feed = spawnSync(process.execPath, ["--import", "tsx", ${check.feed.map((a) => JSON.stringify(a)).join(", ")}], { env: { ...process.env, ...target }, encoding: "utf8", timeout: 60_000 });
    expect(feed.status, feed.stderr).toBe(0);
    for (let i = 0; i < 300 && done < ${check.count}; i++) await new Promise((r) => setTimeout(r, 100));
    expect(done).toBeGreaterThanOrEqual(${check.count});
    service.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(stopped).toBe(true); // it stopped as it should, not killed
    expect(alive(pid)).toBe(false); // and left no process behind
  } finally {
    if (service.exitCode === null) service.kill("SIGKILL");
    if (pid && alive(pid)) process.kill(pid, "SIGKILL");
  }
});
`;

const check = hasService ? serviceChecks[name] : undefined;
if (hasService && !check) fail(`${name} has a service but no entry in packages/harness/src/services.ts: add how to feed it`);

/**
 * The pattern's README for a project on its own: the repo's commands become the starter's scripts,
 * the kit's paths its copy, links to other patterns plain names, the roles file its copy in nats/;
 * the repo's own "Run and test" section and what is marked <!-- repo -->…<!-- /repo --> go.
 */
function forStarter(text: string): string {
  const demo = hasService ? "npm run demo" : "npm start";
  return (
    text
      .replace(/\n## Run and test\n[\s\S]*$/, "\n")
      .replace(/<!-- repo -->[\s\S]*?<!-- \/repo -->/g, "")
      .replace(new RegExp(`pnpm run pattern ${name}( -)?`, "g"), (_, option?: string) => (option ? `${demo} -- -` : demo))
      // npm takes the options after a script's name for itself: they go after "--".
      .replace(
        /pnpm run (dlq|pause|resume)\b( (?=[\w[-]))?/g,
        (_, script: string, more?: string) => `npm run ${script}${more ? " -- " : ""}`,
      )
      .replace(/`pnpm (bench|chaos)/g, "jetstream-patterns' `pnpm $1")
      .replace(/`@repo\/kit` \(`packages\/kit`\)/g, "`src/kit/`")
      .replace(/packages\/kit\/src\//g, "src/kit/")
      .replace(/\]\(\.\.\/\.\.\/nats\//g, "](nats/")
      .replace(/\[([^\]]+)\]\(\.\.\/\.\.\/[^)]+\)/g, "$1 (in jetstream-patterns)")
      .replace(/\[([^\]]+)\]\(\.\.\/[\w-]+\/?\)/g, "$1 (another pattern of jetstream-patterns)")
      .replace(/ +# from the repo root/g, "")
      .split("\n")
      .flatMap((line) => {
        // A file the starter does not have (the pattern's own tests, CI): its row in a table goes, a
        // mention elsewhere says whose it is.
        const missing = (path: string) => !existsSync(join(dir, path));
        const row = /^\| `((?:src|test|nats|\.ci)\/[\w./-]*\w)`/.exec(line);
        if (row && missing(row[1]!)) return [];
        return [
          line.replace(/`((?:src|test|nats|\.ci)\/[\w./-]*\w)`/g, (m, path: string) => (missing(path) ? `jetstream-patterns' ${m}` : m)),
        ];
      })
      .join("\n")
  );
}

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
writeFileSync(
  join(dir, "package.json"),
  json({
    name: project,
    version: "0.1.0",
    private: true,
    type: "module",
    description: pkg.description,
    engines: { node: "^20.19.0 || ^22.12.0 || >=24" }, // tested: 20 and 24 in .ci/run, 22 and 24 in the workflow
    // The pattern's own entries come along: every script that runs a file of src/ (work-queue: the
    // service as `start`, the demo as `demo`, `dlq`); a pattern without a service starts its demo.
    scripts: {
      start: "tsx src/main.ts",
      ...Object.fromEntries(Object.entries(pkg.scripts ?? {}).filter(([, cmd]) => cmd.startsWith("tsx src/"))),
      // The service runs compiled (npm run build once, then npm start): no TypeScript compiler at run
      // time. exec makes node npm's own child, so the SIGTERM npm passes on reaches it, and npm waits.
      ...(hasService
        ? {
            build: "tsc -p tsconfig.build.json",
            prestart: `test -f dist/service.js || { echo "error: no dist/service.js: run npm run build first" >&2; exit 1; }`,
            start: "exec node dist/service.js",
            dev: "tsx src/service.ts",
            // What feeds the service from another process (the starter's test runs it too).
            ...(check ? { feed: `tsx ${check.feed[0]}` } : {}),
          }
        : {}),
      test: "vitest run --testTimeout=120000",
      typecheck: "tsc -p tsconfig.json",
    },
    dependencies: deps,
    devDependencies: devDeps,
  }),
);
const base = JSON.parse(readFileSync(join(repoRoot, "tsconfig.base.json"), "utf8")) as object;
writeFileSync(join(dir, "tsconfig.json"), json({ ...base, include: ["src", "test"] }));
// The build: src/ only, to dist/.
writeFileSync(
  join(dir, "tsconfig.build.json"),
  json({ extends: "./tsconfig.json", compilerOptions: { noEmit: false, outDir: "dist", rootDir: "src" }, include: ["src"] }),
);
writeFileSync(join(dir, ".gitignore"), "node_modules/\ndist/\nnats/roles.env\n"); // roles.env: the passwords make-passwords.sh writes
// The least-privilege roles the README describes, the server config they include, and the script
// that makes their passwords.
mkdirSync(join(dir, "nats"));
for (const f of ["roles.conf", "server.conf", "make-passwords.sh"]) copyFileSync(join(repoRoot, "nats", f), join(dir, "nats", f));
const readme = forStarter(readFileSync(join(from, "README.md"), "utf8"));
writeFileSync(
  join(dir, "test/starter.test.ts"),
  `// Runs the demo (src/main.ts) against the nats-server at NATS_URL and checks its accounting: it
// exits 0 and its summary says nothing was lost or duplicated.${hasService ? " Then starts the service (npm start), feeds it and\n// stops it." : ""} Replace with tests of your own code.
import { ${hasService ? "spawn, " : ""}spawnSync } from "node:child_process";
${check?.listen ? 'import { type AddressInfo, createServer } from "node:net";\n' : ""}${hasService ? 'import { createInterface } from "node:readline";\n' : ""}import { expect, it } from "vitest";

// Before any test: without a server, each would fail on its own, less clearly.
if (!process.env.NATS_URL) throw new Error("set NATS_URL to a nats-server with JetStream enabled (e.g. nats-server -js, or docker run -p 4222:4222 nats -js)");

it("runs the ${name} demo against NATS_URL: nothing lost, nothing duplicated", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", "src/main.ts", ${(testArgs[name] ?? []).map((a) => JSON.stringify(a)).join(", ")}], {
    env: { ...process.env, LOG_FORMAT: "json" },
    encoding: "utf8",
    timeout: 110_000,
  });
  expect(r.status, r.stderr).toBe(0);
  const summary = JSON.parse(r.stdout.trim().split("\\n").at(-1)!) as { msg: string; lost?: number; duplicates?: number; in_both?: number };
  expect(summary.msg).toMatch(/^summary: /);
  expect(summary.lost).toBe(0);
  if (summary.duplicates !== undefined) expect(summary.duplicates).toBe(0);
  if (summary.in_both !== undefined) expect(summary.in_both).toBe(0);
});
${check ? serviceTest(check) : ""}`,
);

writeFileSync(
  join(dir, "README.md"),
  `<!-- Made by "pnpm run new ${name}" from jetstream-patterns; the pattern's README follows. -->
# ${project}

Standalone copy of the **${name}** pattern. It needs Node 22 or 24 (tested; 20 works but is past its end of life) and a nats-server with
JetStream (\`nats-server -js\`, or \`docker run -p 4222:4222 nats -js\`).

\`\`\`sh
npm install
${
  hasService
    ? `npm run build                               # compiles src/ to dist/ (once per deploy)
NATS_URL=nats://127.0.0.1:4222 npm start     # the service (node dist/service.js): serves until SIGTERM
NATS_URL=nats://127.0.0.1:4222 npm run dev   # the same from src/ with tsx, while you change it
NATS_URL=nats://127.0.0.1:4222 npm run feed -- ${check?.feed.slice(1).join(" ")}   # work for it, from another process (${check?.feed[0]})
NATS_URL=nats://127.0.0.1:4222 npm run demo  # the demo (options: npm run demo -- --help)`
    : "NATS_URL=nats://127.0.0.1:4222 npm start     # the demo (options: npm start -- --help)"
}
NATS_URL=nats://127.0.0.1:4222 npm test      # runs the demo and checks nothing was lost
\`\`\`

Connection settings follow the NATS CLI: \`NATS_URL\` (user info in it too), \`NATS_USER\`/\`NATS_PASSWORD\`,
\`NATS_TOKEN\`, \`NATS_CREDS\`, \`NATS_NKEY\`, \`NATS_CA\`/\`NATS_CERT\`/\`NATS_KEY\` for TLS, and \`NATS_INBOX_PREFIX\` for a user that may read replies only under its own prefix.${
    hasService
      ? `

Deploying: build once (\`npm run build\`), then run \`npm start\` or \`node dist/service.js\` as the
process your supervisor or container starts (its PID 1). Either way SIGTERM (\`docker stop\`, Kubernetes,
systemd) reaches node: the service stops taking work, finishes what it holds within \`STOP_DEADLINE_MS\`
and exits 0 (\`npm test\` checks it through \`npm start\`). A shell wrapper must \`exec\` node, or the
signal stops at the shell and node is left running.`
      : ""
  } \`src/kit/\` is the code every pattern of jetstream-patterns shares (connection from
the environment, logging, the CLI runner, stream setup, errors by type, the fast publisher), copied
in whole: it is yours to change now.

---

${readme}`,
);
// The READMEs of src's folders (work-queue's status and operator tools) come along, read the same way.
for (const sub of readdirSync(join(from, "src"), { withFileTypes: true }).filter((e) => e.isDirectory())) {
  const doc = join(from, "src", sub.name, "README.md");
  if (existsSync(doc)) writeFileSync(join(dir, "src", sub.name, "README.md"), forStarter(readFileSync(doc, "utf8")));
}
process.stdout.write(`wrote ${name} to ${dir}\nnext: cd ${dir} && npm install && NATS_URL=nats://127.0.0.1:4222 npm test\n`);
