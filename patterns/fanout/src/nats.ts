// Connection, logging and error handling shared by every file of this pattern. Each pattern carries
// its own copy of this file (kept identical by `pnpm check:sync`) so a pattern folder can be copied
// out and run on its own.
import { JetStreamApiError, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { connect, type NatsConnection, type NodeConnectionOptions } from "@nats-io/transport-node";
import { credsAuthenticator } from "@nats-io/transport-node";
import { readFileSync } from "node:fs";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

/** An error whose message is the whole story: printed as one line, no stack trace. */
export class UserError extends Error {}

/** JSON log lines when asked (LOG_FORMAT=json, --json) or when output is not a terminal. */
const jsonLogs = () => process.env.LOG_FORMAT === "json" || process.argv.includes("--json") || !process.stdout.isTTY;

export function createLogger(name: string): Logger {
  const level = process.env.LOG_LEVEL ?? "info";
  if (jsonLogs()) return pino({ name, level, base: undefined });
  return pino(
    { name, level, base: undefined },
    pretty({ sync: true, colorize: true, ignore: "name", translateTime: "HH:MM:ss.l", singleLine: true }),
  );
}

/** A run's last word: one log line (what machines read) and, in a terminal, a table for people. */
export function logSummary(log: Logger, summary: Record<string, unknown>, msg: string): void {
  log.info(summary, msg);
  if (jsonLogs()) return;
  const width = Math.max(...Object.keys(summary).map((k) => k.length));
  const cell = (v: unknown) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  process.stdout.write(`\n${Object.entries(summary).map(([k, v]) => `  ${k.padEnd(width)}  ${cell(v)}`).join("\n")}\n\n`);
}

/** Connects the way the NATS CLI does: NATS_URL, NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS. */
export async function connectFromEnv(name: string, extra: Partial<NodeConnectionOptions> = {}): Promise<NatsConnection> {
  const servers = process.env.NATS_URL || "nats://127.0.0.1:4222";
  const opts: NodeConnectionOptions = { servers: servers.split(",").map((s) => s.trim()), name, ...extra };
  if (process.env.NATS_USER) {
    opts.user = process.env.NATS_USER;
    opts.pass = process.env.NATS_PASSWORD ?? "";
  }
  if (process.env.NATS_TOKEN) opts.token = process.env.NATS_TOKEN;
  if (process.env.NATS_CREDS) opts.authenticator = credsAuthenticator(readFileSync(process.env.NATS_CREDS));
  try {
    return await connect(opts);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/authoriz|authentica|credentials/i.test(msg)) {
      throw new UserError(`nats-server at ${servers} refused the connection (${msg}) — set NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS`);
    }
    throw new UserError(`no nats-server at ${servers} (${msg}) — run "docker compose up -d" or set NATS_URL`);
  }
}

/** Numeric compare of "2.10.4"-style versions. */
export function versionAtLeast(version: string | undefined, min: string): boolean {
  const a = (version ?? "0").split(".").map((p) => Number.parseInt(p, 10) || 0);
  const b = min.split(".").map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

export type StreamSpec = Partial<StreamConfig> & { name: string };

/** Copies of each stream: NATS_REPLICAS (3 on a 3-node cluster), default 1. */
export function replicas(): number {
  const n = Number(process.env.NATS_REPLICAS ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new UserError(`NATS_REPLICAS must be 1 to 5, got "${process.env.NATS_REPLICAS}"`);
  return n;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.status === 404;
}

/**
 * Creates the stream, or checks that an existing one has the settings this pattern depends on.
 * A mismatch is reported, never silently changed: the stream may hold someone's data.
 */
export async function ensureStream(jsm: JetStreamManager, want: StreamSpec, keys: (keyof StreamConfig)[] = ["retention", "storage"]): Promise<StreamConfig> {
  try {
    const { config } = await jsm.streams.info(want.name);
    for (const key of keys) {
      if (want[key] !== undefined && JSON.stringify(config[key]) !== JSON.stringify(want[key])) {
        throw new UserError(
          `stream ${want.name} exists with ${key}=${JSON.stringify(config[key])} but this pattern needs ${key}=${JSON.stringify(want[key])} — delete it ("nats stream rm ${want.name}") or use another server`,
        );
      }
    }
    return config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
    const created = await addStream(jsm, { num_replicas: replicas(), ...want });
    // A replicated stream answers publishes only once its replicas have elected a leader: until then a
    // publish gets "no responders". Wait for the leader (bounded) so callers can publish at once.
    for (let i = 0; i < 100 && (created.config.num_replicas ?? 1) > 1; i++) {
      if ((await jsm.streams.info(want.name)).cluster?.leader) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return created.config;
  }
}

/**
 * Adds a stream, retrying for up to 10 s while the cluster cannot place its replicas: a cluster that
 * has just started may not know yet that its peers have JetStream ("no suitable peers for placement",
 * seen on 2.10.27 right after all nodes were healthy and current).
 */
async function addStream(jsm: JetStreamManager, config: StreamSpec) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await jsm.streams.add(config);
    } catch (err) {
      if (attempt >= 50 || !/no suitable peers/i.test(err instanceof Error ? err.message : String(err))) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Runs a CLI entry point: Ctrl-C aborts the signal, any error is one line on stderr and exit 1. */
export function runMain(name: string, fn: (signal: AbortSignal, log: Logger) => Promise<void>): void {
  const log = createLogger(name);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  process.once("SIGTERM", () => abort.abort());
  fn(abort.signal, log).then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      const badArgs = String((err as { code?: string })?.code).startsWith("ERR_PARSE_ARGS");
      const text = err instanceof Error ? err.message : String(err);
      const msg = err instanceof UserError ? text : badArgs ? `${text} (see --help)` : `${name} failed: ${text}`;
      process.stderr.write(`error: ${msg}\n`);
      process.exit(1);
    },
  );
}
