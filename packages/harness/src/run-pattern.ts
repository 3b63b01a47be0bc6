// `pnpm run pattern <name> [options]`: runs a pattern's demo (patterns/<name>/src/main.ts) against
// NATS_URL if set, else against a nats-server it starts itself and stops afterwards.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import { CHECK_OPTIONS_ONLY } from "@repo/kit";
import { repoRoot, serverAtHand } from "./binary.js";
import { startCluster } from "./cluster.js";
import { patternNames } from "./patterns.js";
import { startServer } from "./server.js";

const help = (names: string[]) => {
  const describe = (n: string) =>
    (JSON.parse(readFileSync(join(repoRoot, "patterns", n, "package.json"), "utf8")) as { description?: string }).description ?? "";
  return `usage: pnpm run pattern <name> [--cluster] [options]

Runs a pattern's demo: it narrates each step and ends with a summary (lost=0 ...); exit 1 if the
pattern's guarantee did not hold. Without NATS_URL it starts a nats-server on a free loopback port
with a temp store, and stops it afterwards.

patterns:
${names.map((n) => `  ${n.padEnd(16)}${describe(n)}`).join("\n")}

options:
  <name> --help     the pattern's own options (message counts, workers, ...)
  --cluster         start a local 3-node cluster and use R3 streams (also NATS_CLUSTER=1)
  --json            JSON log lines (also LOG_FORMAT=json; the default when output is not a terminal)

environment:
  NATS_URL                  use this server (comma-separated for a cluster) instead of starting one
  NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY   credentials, as with the NATS CLI
                            (user:password@ or token@ in NATS_URL work too; never printed)
  NATS_CA, NATS_CERT, NATS_KEY   TLS: the server's CA, and a client certificate and key (tls:// URLs)
  NATS_TIMEOUT              how long connecting may take (a duration: 5s, 500ms; default 5s, as the CLI)
  NATS_REPLICAS             stream replicas on your own cluster (default 1; --cluster sets 3)
  NATS_SERVER_VERSION       which cached nats-server to start (2.9.10, 2.10.27, 2.15.1; default newest)
`;
};

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

async function main(): Promise<number> {
  const [name, ...rest] = process.argv.slice(2);
  const names = patternNames();
  // Listing is not an error: no name gives the list, as --help does.
  if (!name || name === "--help" || name === "-h") {
    process.stdout.write(help(names));
    return 0;
  }
  if (!names.includes(name)) fail(`unknown pattern "${name}" — choose one of: ${names.join(", ")}`);

  const env = { ...process.env };
  let server: { stop(): Promise<void> } | undefined;
  const wantsHelp = rest.includes("--help") || rest.includes("-h");
  // --cluster (or NATS_CLUSTER=1): a local 3-node cluster, and R3 streams.
  const cluster = rest.includes("--cluster") || env.NATS_CLUSTER === "1";
  const args = rest.filter((a) => a !== "--cluster");
  if (cluster && env.NATS_URL)
    fail("--cluster starts its own 3-node cluster: unset NATS_URL, or drop --cluster and set NATS_REPLICAS=3 for your cluster");
  // A SIGTERM or SIGHUP sent to us alone (a supervisor, a closed terminal) is passed on to the demo
  // and cleaned up after below; Ctrl-C reaches the demo through the terminal, and we only wait for it.
  // One that comes while the server starts ends the run once it has (the nats-server we start is in a
  // process group of its own and would outlive us).
  let child: ReturnType<typeof spawn> | undefined;
  let early: NodeJS.Signals | undefined;
  for (const sig of ["SIGTERM", "SIGHUP", "SIGINT"] as const)
    process.on(sig, () => {
      if (!child) early = sig;
      else if (sig !== "SIGINT") child.kill(sig);
    });
  const demoArgs = ["--import", "tsx", join(repoRoot, "patterns", name, "src/main.ts"), ...args];
  const cwd = join(repoRoot, "patterns", name);
  if (!env.NATS_URL && !wantsHelp) {
    const what = cluster ? "a 3-node nats-server cluster" : "nats-server";
    // The demo's options first, checked while the server starts: a bad one is the demo's own one-line
    // error, and no server is announced for a run that will not happen. A server still to be fetched
    // (the first run) is fetched only once the options are good.
    const check = exitCode(spawn(process.execPath, demoArgs, { cwd, env: { ...env, [CHECK_OPTIONS_ONLY]: "1" }, stdio: "inherit" }));
    const start = (): Promise<{ url: string; version: string; stop(): Promise<void> }> => (cluster ? startCluster() : startServer());
    const starting = serverAtHand()
      ? start()
      : check.then((code) => (code === 0 && !early ? start() : Promise.reject(new Error("not needed"))));
    starting.catch(() => {}); // reported below, once the options are known to be good
    const checked = await check;
    if (checked !== 0 || early) {
      await starting.then((s) => s.stop()).catch(() => {});
      return early ? 128 + (constants.signals[early] ?? 0) : checked;
    }
    const started = await starting.catch((err: Error) => fail(`could not start ${what}: ${err.message.split("\n")[0]}`));
    server = started;
    env.NATS_URL = started.url;
    if (cluster) env.NATS_REPLICAS = env.NATS_REPLICAS ?? "3";
    process.stderr.write(
      `started ${what} ${started.version} on ${started.url} (temp store; stopped when the demo ends; set NATS_URL to use your own)\n`,
    );
  }
  if (early) {
    await server?.stop();
    return 128 + (constants.signals[early] ?? 0);
  }
  child = spawn(process.execPath, demoArgs, { cwd, env, stdio: "inherit" });
  const code = await exitCode(child);
  await server?.stop();
  return code;
}

/** A process's exit code, or 128 + its signal's number. */
const exitCode = (p: ReturnType<typeof spawn>) =>
  new Promise<number>((resolve) => p.once("exit", (c, sig) => resolve(c ?? (sig ? 128 + (constants.signals[sig] ?? 0) : 1))));

main().then(
  (code) => process.exit(code),
  (err: unknown) => fail(err instanceof Error ? err.message : String(err)),
);
