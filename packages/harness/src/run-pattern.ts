// `pnpm run pattern <name> [options]`: runs a pattern's demo (patterns/<name>/src/main.ts) against
// NATS_URL if set, else against a nats-server it starts itself and stops afterwards.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "./binary.js";
import { patternNames } from "./patterns.js";
import { type NatsServer, startServer } from "./server.js";

const usage = (names: string[]) =>
  `usage: pnpm run pattern <name> [options]   (pattern: ${names.join(", ")}; options: pnpm run pattern <name> --help)`;

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
  let server: NatsServer | undefined;
  const wantsHelp = rest.includes("--help") || rest.includes("-h");
  if (!env.NATS_URL && !wantsHelp) {
    server = await startServer().catch((err: Error) => fail(`could not start nats-server: ${err.message.split("\n")[0]}`));
    env.NATS_URL = server.url;
    process.stderr.write(`started nats-server ${server.version} on ${server.url} (temp store; stopped when the demo ends; set NATS_URL to use your own)\n`);
  }
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "patterns", name, "src/main.ts"), ...rest], {
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
