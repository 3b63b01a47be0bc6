// Starts a real nats-server on a free loopback port with a temp JetStream store dir, waits until it
// is ready, and stops it (removing the dir) afterwards. It can also restart on the same store dir.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findServerBinary } from "./binary.js";

export interface ServerOptions {
  /** nats-server version or prefix ("2.10"); default NATS_SERVER_VERSION, else the newest. */
  version?: string;
  /** Extra lines for the server config file (auth, limits, sync_interval, ...). */
  config?: string;
}

export interface NatsServer {
  url: string;
  port: number;
  version: string;
  storeDir: string;
  /** True when NATS_URL pointed at a server this harness did not start. */
  external: boolean;
  /** Graceful stop (SIGTERM); removes the store dir. Safe to call twice. */
  stop(): Promise<void>;
  /** SIGKILL: a crash. The store dir is kept for restart(). */
  kill(): Promise<void>;
  /** Starts again on the same port and store dir (after stop({keep}) or kill()). */
  restart(): Promise<void>;
  /** Stops the process but keeps the store dir, for restart(). */
  halt(): Promise<void>;
  /** The server's log so far, for diagnosing a failed test. */
  log(): string;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Uses the server at NATS_URL when set, else starts one. */
export async function useServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const url = process.env.NATS_URL;
  if (!url) return startServer(opts);
  const noop = async () => {};
  const port = Number(new URL(url.replace(/^nats:/, "http:")).port || 4222);
  const unsupported = async () => {
    throw new Error("cannot restart a server given by NATS_URL");
  };
  return {
    url, port, version: "external", storeDir: "", external: true,
    stop: noop, halt: unsupported, kill: unsupported, restart: unsupported, log: () => "",
  };
}

export async function startServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const bin = findServerBinary(opts.version);
  const dir = mkdtempSync(join(tmpdir(), "jsp-nats-"));
  const storeDir = join(dir, "store");
  let port = 0;
  let child: ChildProcess | undefined;
  let output = "";

  const launch = async (): Promise<void> => {
    const conf = join(dir, "server.conf");
    writeFileSync(
      conf,
      [
        `listen: 127.0.0.1:${port}`,
        `server_name: jsp-${port}`,
        `jetstream { store_dir: "${storeDir}" }`,
        opts.config ?? "",
      ].join("\n"),
    );
    const proc = spawn(bin.path, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    running.add(proc);
    proc.once("exit", () => running.delete(proc));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error("did not become ready within 15s")), 15_000);
      const fail = (err: Error) => {
        clearTimeout(timer);
        proc.kill("SIGKILL");
        reject(new Error(`nats-server ${bin.version} on port ${port}: ${err.message}\n${output.slice(-2000)}`));
      };
      proc.stderr?.setEncoding("utf8");
      proc.stderr?.on("data", (chunk: string) => {
        output += chunk;
        if (output.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once("exit", (code, signal) => fail(new Error(`exited early (${signal ?? code})`)));
      proc.once("error", fail);
    });
  };

  const halt = async (signal: NodeJS.Signals) => {
    const proc = child;
    child = undefined;
    if (!proc) return;
    proc.kill(signal);
    if (!(await waitForExit(proc, 10_000))) {
      proc.kill("SIGKILL");
      await waitForExit(proc, 5_000);
    }
  };

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      // Another process may have taken the port between freePort() and listen: try another.
      if (attempt >= 3 || !String(err).includes("address already in use")) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    version: bin.version,
    storeDir,
    external: false,
    halt: () => halt("SIGTERM"),
    kill: () => halt("SIGKILL"),
    restart: async () => {
      await halt("SIGTERM");
      output += "\n--- restart ---\n";
      await launch();
    },
    stop: async () => {
      await halt("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
    log: () => output,
  };
}
