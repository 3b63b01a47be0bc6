// Starts real nats-server processes on free loopback ports with temp JetStream store dirs, waits until
// they are ready, and stops them (removing the dirs) afterwards. They can be stopped, killed (SIGKILL)
// and restarted on the same port and store dir, for fault tests.
//
// Every server starts from the repo's nats/*.conf, the files docker-compose.yml mounts: a small config
// per process includes one of them and adds the test's own lines, and what differs per instance (name,
// ports, store dir, routes) is given on the command line, as compose's `command:` gives it.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { compareVersions, findServerBinary, repoRoot, type ServerBinary } from "./binary.js";

export interface ServerOptions {
  /** nats-server version or prefix ("2.10"); default NATS_SERVER_VERSION, else the newest. */
  version?: string;
  /** Extra lines for the server config file (auth, limits, ...). */
  config?: string;
  /** "always": fsync every write (sync_interval: always, nats-server >= 2.10). Default: the server's lazy fsync. */
  sync?: "default" | "always";
  /**
   * Start from nats/roles.conf: the least-privilege users of every pattern, each with a random
   * password made here and given to nats-server in its environment. `login(user)` connects as one.
   */
  roles?: boolean;
}

/** Connection options for one of nats/roles.conf's users. */
export interface Login {
  servers: string;
  user: string;
  pass: string;
  /** _INBOX.<user>: the only inboxes nats/roles.conf lets this user read (NATS_INBOX_PREFIX for the tools). */
  inboxPrefix: string;
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
  /** With `roles`: how to connect as that user of nats/roles.conf. */
  login(user: string): Login;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function freePort(): Promise<number> {
  const reserved = await reservePorts(1);
  await reserved.release();
  return reserved.ports[0]!;
}

/**
 * `n` distinct free loopback ports, each held by a listening socket until `release()`: ports chosen
 * one after the other and freed at once can repeat, and a listener opened meanwhile (a link) cannot
 * take one that is still held.
 */
export async function reservePorts(n: number): Promise<{ ports: number[]; release(): Promise<void> }> {
  const servers: Server[] = [];
  const release = () => Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r())))).then(() => undefined);
  try {
    for (let i = 0; i < n; i++) {
      const srv = createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => srv.once("error", reject).listen(0, "127.0.0.1", resolve));
    }
  } catch (err) {
    await release();
    throw err;
  }
  return { ports: servers.map((srv) => (srv.address() as AddressInfo).port), release };
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

/** Extra config lines for fsync on every write, when asked (and supported). */
export function syncLines(bin: ServerBinary, sync: ServerOptions["sync"]): string {
  if (sync !== "always") return "";
  if (compareVersions(bin.version, "2.10.0") < 0)
    throw new Error(`sync_interval: always needs nats-server >= 2.10; this is ${bin.version}`);
  return "jetstream { sync_interval: always }";
}

/** The user of nats/roles.conf that a JSP_<USER>_PASSWORD variable belongs to: JSP_WORK_QUEUE_WORKER_PASSWORD -> work-queue-worker. */
const userOf = (variable: string) => variable.slice(4, -9).toLowerCase().replaceAll("_", "-");

/** The environment variables nats/roles.conf reads its users' passwords from (JSP_<USER>_PASSWORD). */
function roleVariables(): string[] {
  const conf = readFileSync(join(repoRoot, "nats/roles.conf"), "utf8");
  return [...new Set(conf.match(/\$JSP_[A-Z_]+_PASSWORD/g)?.map((v) => v.slice(1)))];
}

/** A random password for every user of nats/roles.conf, as the environment variables it reads. */
export function rolePasswords(): Record<string, string> {
  return Object.fromEntries(roleVariables().map((v) => [v, `p${randomBytes(18).toString("hex")}`]));
}

/** login() for a server started from nats/roles.conf with these passwords. */
export function loginWith(url: string, passwords: Record<string, string> | undefined) {
  return (user: string): Login => {
    const entry = Object.entries(passwords ?? {}).find(([v]) => userOf(v) === user);
    if (!entry) throw new Error(passwords ? `no user ${user} in nats/roles.conf` : "this server was not started with { roles: true }");
    return { servers: url, user, pass: entry[1], inboxPrefix: `_INBOX.${user}` };
  };
}

export interface ProcessSpec {
  /** The file of nats/ this process starts from ("server.conf", "cluster.conf", "roles.conf"). */
  base: string;
  /** The test's own config lines, after the include. */
  extra: string;
  /** Per-instance flags besides the client address and port. */
  flags: string[];
  /** Environment for nats-server (the role passwords). */
  env?: Record<string, string>;
}

/** One nats-server process with a fixed port, config and store dir, startable again after a stop or kill. */
export function serverProcess(bin: ServerBinary, dir: string, port: number, spec: ProcessSpec) {
  let child: ChildProcess | undefined;
  let output = "";
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, "server.conf");
  // nats-server resolves an include relative to the including file, so the path is made relative.
  writeFileSync(conf, `include "${relative(dir, join(repoRoot, "nats", spec.base))}"\n${spec.extra}\n`);
  const args = ["-c", conf, "--addr", "127.0.0.1", "--port", String(port), ...spec.flags];

  const start = async (): Promise<void> => {
    // A process group of its own: a Ctrl-C in the terminal (SIGINT to the whole foreground group)
    // reaches the demo, which stops and counts what is left, not the server it still talks to. The
    // harness stops it afterwards (and kills it when this process exits).
    const proc = spawn(bin.path, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...spec.env }, detached: true });
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

/** A server this harness did not start (docker compose's): it can be used, not stopped or restarted. */
export function externalServer(url: string, passwords?: Record<string, string>): NatsServer {
  const port = Number(new URL(url.split(",")[0]!.replace(/^nats:/, "http:")).port || 4222);
  const unsupported = async () => {
    throw new Error(`cannot stop or restart a server this harness did not start (${url})`);
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
    login: loginWith(url, passwords),
  };
}

/** Uses the server at NATS_URL when set, else starts one. */
export async function useServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const url = process.env.NATS_URL;
  return url ? externalServer(url) : startServer(opts);
}

/**
 * The server of nats/roles.conf at NATS_ROLES_URL (docker compose's "nats-secure", its passwords in
 * this process's environment as JSP_<USER>_PASSWORD), else one started here with random passwords.
 */
export async function useRolesServer(version?: string): Promise<NatsServer> {
  const url = process.env.NATS_ROLES_URL;
  if (!url) return startServer({ roles: true, version });
  const passwords: Record<string, string> = {};
  for (const name of roleVariables()) {
    const value = process.env[name];
    if (!value) throw new Error(`NATS_ROLES_URL is set but ${name} is not: load nats/roles.env into the environment`);
    passwords[name] = value;
  }
  return externalServer(url, passwords);
}

export async function startServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const bin = findServerBinary(opts.version);
  const dir = mkdtempSync(join(tmpdir(), "jsp-nats-"));
  const storeDir = join(dir, "store");
  const passwords = opts.roles ? rolePasswords() : undefined;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const node = serverProcess(bin, join(dir, `p${port}`), port, {
      base: opts.roles ? "roles.conf" : "server.conf",
      extra: [syncLines(bin, opts.sync), opts.config ?? ""].join("\n"),
      flags: ["--name", `jsp-${port}`, "--store_dir", storeDir, "--http_port", String(await freePort())],
      env: passwords,
    });
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
      login: loginWith(`nats://127.0.0.1:${port}`, passwords),
    };
  }
}
