// `pnpm run pattern <name> [options]`: runs a pattern's demo (patterns/<name>/src/main.ts) against
// NATS_URL if set, else against a nats-server it starts itself and stops afterwards.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "./binary.js";
import { patternNames } from "./patterns.js";
import { startCluster } from "./cluster.js";
import { startServer } from "./server.js";

const usage = (names: string[]) =>
  `usage: pnpm run pattern <name> [--cluster] [options]   (pattern: ${names.join(", ")}; options: pnpm run pattern <name> --help)`;

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

async function main(): Promise<number> {
  const [name, ...rest] = process.argv.slice(2);
  const names = patternNames();
  if (!name || name === "--help" || name === "-h") {
    process.stderr.write(`${usage(names)}\n`);
    return name ? 0 : 2;
  }
  if (!names.includes(name)) fail(`unknown pattern "${name}" — choose one of: ${names.join(", ")}`);

  const env = { ...process.env };
  let server: { stop(): Promise<void> } | undefined;
  const wantsHelp = rest.includes("--help") || rest.includes("-h");
  // --cluster (or NATS_CLUSTER=1): a local 3-node cluster, and R3 streams.
  const cluster = rest.includes("--cluster") || env.NATS_CLUSTER === "1";
  const args = rest.filter((a) => a !== "--cluster");
  if (cluster && env.NATS_URL) fail("--cluster starts its own 3-node cluster: unset NATS_URL, or drop --cluster and set NATS_REPLICAS=3 for your cluster");
  if (!env.NATS_URL && !wantsHelp) {
    const what = cluster ? "a 3-node nats-server cluster" : "nats-server";
    const started = await (cluster ? startCluster() : startServer()).catch((err: Error) => fail(`could not start ${what}: ${err.message.split("\n")[0]}`));
    server = started;
    env.NATS_URL = started.url;
    if (cluster) env.NATS_REPLICAS = env.NATS_REPLICAS ?? "3";
    process.stderr.write(`started ${what} ${started.version} on ${started.url} (temp store; stopped when the demo ends; set NATS_URL to use your own)\n`);
  }
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "patterns", name, "src/main.ts"), ...args], {
    cwd: join(repoRoot, "patterns", name),
    env,
    stdio: "inherit",
  });
  // Ctrl-C reaches the child through the terminal; we only wait for it, then clean up.
  process.on("SIGINT", () => {});
  const code = await new Promise<number>((resolve) => child.once("exit", (c, sig) => resolve(c ?? (sig ? 130 : 1))));
  await server?.stop();
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => fail(err instanceof Error ? err.message : String(err)),
);
