// Starts real nats-server processes on free loopback ports with temp JetStream store dirs, waits until
// they are ready, and stops them (removing the dirs) afterwards. They can be stopped, killed (SIGKILL)
// and restarted on the same port and store dir, for fault tests.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compareVersions, findServerBinary, type ServerBinary } from "./binary.js";

export interface ServerOptions {
  /** nats-server version or prefix ("2.10"); default NATS_SERVER_VERSION, else the newest. */
  version?: string;
  /** Extra lines for the server config file (auth, limits, ...). */
  config?: string;
  /** "always": fsync every write (sync_interval: always, nats-server >= 2.10). Default: the server's lazy fsync. */
  sync?: "default" | "always";
}

export interface NatsServer {
  url: string;
  port: number;
  version: string;
  storeDir: string;
  /** True when NATS_URL pointed at a server this harness did not start. */
  external: boolean;
  /** Graceful stop (SIGTERM), then removes the store dir. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the process (SIGTERM) but keeps the store dir, for restart(). */
  halt(): Promise<void>;
  /** SIGKILL: a crash. The store dir is kept for restart(). */
  kill(): Promise<void>;
  /** Starts again on the same port and store dir (stopping it first if it runs). */
  restart(): Promise<void>;
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

/** The jetstream {} block: store dir, and fsync on every write when asked (and supported). */
export function jetstreamBlock(bin: ServerBinary, storeDir: string, sync: ServerOptions["sync"]): string {
  if (sync === "always" && compareVersions(bin.version, "2.10.0") < 0) {
    throw new Error(`sync_interval: always needs nats-server >= 2.10; this is ${bin.version}`);
  }
  return `jetstream { store_dir: "${storeDir}"${sync === "always" ? ", sync_interval: always" : ""} }`;
}

/** One nats-server process with a fixed port, config and store dir, startable again after a stop or kill. */
export function serverProcess(bin: ServerBinary, dir: string, port: number, config: string) {
  let child: ChildProcess | undefined;
  let output = "";
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, "server.conf");
  writeFileSync(conf, `listen: 127.0.0.1:${port}\n${config}\n`);

  const start = async (): Promise<void> => {
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

  return {
    start,
    halt,
    restart: async () => {
      await halt("SIGTERM");
      output = `${output.replaceAll("Server is ready", "Server was ready")}\n--- restart ---\n`;
      await start();
    },
    running: () => child !== undefined,
    log: () => output,
  };
}

/** Uses the server at NATS_URL when set, else starts one. */
export async function useServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const url = process.env.NATS_URL;
  if (!url) return startServer(opts);
  const port = Number(new URL(url.split(",")[0]!.replace(/^nats:/, "http:")).port || 4222);
  const unsupported = async () => {
    throw new Error("cannot stop or restart a server given by NATS_URL");
  };
  return {
    url,
    port,
    version: "external",
    storeDir: "",
    external: true,
    stop: async () => {},
    halt: unsupported,
    kill: unsupported,
    restart: unsupported,
    log: () => "",
  };
}

export async function startServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const bin = findServerBinary(opts.version);
  const dir = mkdtempSync(join(tmpdir(), "jsp-nats-"));
  const storeDir = join(dir, "store");
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const node = serverProcess(
      bin,
      join(dir, `p${port}`),
      port,
      [`server_name: jsp-${port}`, jetstreamBlock(bin, storeDir, opts.sync), opts.config ?? ""].join("\n"),
    );
    try {
      await node.start();
    } catch (err) {
      // Another process may have taken the port between freePort() and listen: try another.
      if (attempt < 3 && String(err).includes("address already in use")) continue;
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return {
      url: `nats://127.0.0.1:${port}`,
      port,
      version: bin.version,
      storeDir,
      external: false,
      halt: () => node.halt("SIGTERM"),
      kill: () => node.halt("SIGKILL"),
      restart: () => node.restart(),
      stop: async () => {
        await node.halt("SIGTERM");
        rmSync(dir, { recursive: true, force: true });
      },
      log: node.log,
    };
  }
}
