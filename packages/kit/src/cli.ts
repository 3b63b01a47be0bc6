// Running an entry point: options checked into one-line errors, Ctrl-C and SIGTERM as an AbortSignal,
// and any failure printed as one line on stderr with a non-zero exit, never a stack trace.
import { writeSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { type ParseArgsConfig, parseArgs } from "node:util";
import { explain, UserError } from "./errors.js";
import { createLogger, flushLogs, type Logger } from "./log.js";

/** A whole-number option of at least `min`, or a UserError naming the option and what it got. */
export function intOption(name: string, value: string | undefined, min = 1): number {
  const n = Number(value);
  if (value === undefined || value.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new UserError(`${name} must be ${min === 1 ? "a positive integer" : `an integer >= ${min}`}, got "${value ?? ""}"`);
  }
  return n;
}

/** Runs a CLI entry point: Ctrl-C or SIGTERM aborts the signal, any error is one line on stderr and exit 1. */
export function runMain(name: string, fn: (signal: AbortSignal, log: Logger) => Promise<void>): void {
  const log = createLogger(name);
  const abort = new AbortController();
  let interrupted = false;
  process.once("SIGINT", () => {
    interrupted = true;
    abort.abort();
  });
  process.once("SIGTERM", () => abort.abort()); // a service asked to stop: a clean stop exits 0
  const exit = (code: number) => void flushLogs().then(() => process.exit(code));
  fn(abort.signal, log).then(
    // Ctrl-C ends a clean run with the conventional 128 + SIGINT, unless the run already failed.
    () => exit(Number(process.exitCode ?? (interrupted ? 130 : 0))),
    (err: unknown) => {
      writeSync(2, `error: ${explain(err, name)}\n`); // at once: stderr to a pipe is written later otherwise
      exit(1);
    },
  );
}

/** True when this module is the process's entry (`tsx src/producer.ts`), not imported. */
export function isEntry(moduleUrl: string): boolean {
  const entry = process.argv[1];
  return entry !== undefined && moduleUrl === pathToFileURL(entry).href;
}

/** What every demo's --help ends with: the option and the environment all demos share. */
const SHARED_HELP = `  --json        JSON log lines (also LOG_FORMAT=json)
  server: NATS_URL (user:password@ or token@ in it work; unset, \`pnpm run pattern\` starts a nats-server for
          the run, and a demo run by itself uses nats://127.0.0.1:4222), NATS_USER/NATS_PASSWORD, NATS_TOKEN,
          NATS_CREDS, NATS_NKEY; TLS: NATS_CA, NATS_CERT, NATS_KEY; NATS_INBOX_PREFIX (where replies come);
          NATS_TIMEOUT (how long connecting may take, default 5s)`;

/** Set to "1": a demo checks its options (a bad one is its one-line error) and does nothing else. */
export const CHECK_OPTIONS_ONLY = "DEMO_CHECK_OPTIONS_ONLY";

/** A demo option: a whole number with its default, at least 1 unless `min` says otherwise. */
export type IntSpec = number | { default: number; min: number };

/**
 * A demo's command line: each option in `spec` takes a whole number (checked by intOption), plus
 * --json and --help. Returns undefined when --help printed `usage`, or when only the options were to
 * be checked (CHECK_OPTIONS_ONLY).
 */
export function demoOptions<K extends string>(usage: string, spec: Record<K, IntSpec>): Record<K, number> | undefined {
  const options: ParseArgsConfig["options"] = { json: { type: "boolean" }, help: { type: "boolean", short: "h" } };
  for (const [name, s] of Object.entries<IntSpec>(spec))
    options[name] = { type: "string", default: String(typeof s === "number" ? s : s.default) };
  const { values } = parseArgs({ options });
  if (values.help) {
    process.stdout.write(`${usage}\n${SHARED_HELP}\n`);
    return undefined;
  }
  const checked = Object.entries<IntSpec>(spec).map(([name, s]) => [
    name,
    intOption(`--${name}`, String(values[name]), typeof s === "number" ? 1 : s.min),
  ]);
  // `pnpm run pattern` asks this first, before it starts a server the demo would not use.
  if (process.env[CHECK_OPTIONS_ONLY] === "1") return undefined;
  return Object.fromEntries(checked) as Record<K, number>;
}
