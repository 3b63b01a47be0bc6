// `tsx packages/harness/src/with-server.ts <command...>`: starts a nats-server (newest in the cache, or
// NATS_SERVER_VERSION) on a free loopback port with a temp store, runs the command with NATS_URL set to
// it, stops the server and exits with the command's code. CI uses it to test starters outside the repo.
import { spawn } from "node:child_process";
import { startServer } from "./server.js";

const [command, ...args] = process.argv.slice(2);
if (!command) {
  process.stderr.write("usage: tsx packages/harness/src/with-server.ts <command> [args...]\n");
  process.exit(2);
}
const server = await startServer().catch((err: Error) => {
  process.stderr.write(`error: could not start nats-server: ${err.message.split("\n")[0]}\n`);
  process.exit(2);
});
const child = spawn(command, args, { stdio: "inherit", env: { ...process.env, NATS_URL: server.url } });
const code = await new Promise<number>((resolve) => child.once("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0))));
await server.stop();
process.exit(code);
