// Logging with pino: JSON lines for machines, one pretty line per event in a terminal, and a run's
// last word as a summary (a log line, plus a table for people).
import { type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger };

/** JSON log lines when asked (LOG_FORMAT=json, --json) or when output is not a terminal. */
const jsonLogs = () => process.env.LOG_FORMAT === "json" || process.argv.includes("--json") || !process.stdout.isTTY;

// JSON lines are written asynchronously, all loggers through one stream (so in the order logged): a
// service whose stdout is read slowly (a log shipper) keeps its event loop, and so its heartbeats and
// acks, running. Before a run exits, flushLogs() waits for the lines still queued: pino's own exit
// flush skips a write waiting for room in a pipe, and the last lines, the summary among them, were
// lost or came late (kit-tests run-main.test.ts).
let jsonOut: ReturnType<typeof pino.destination> | undefined;

/** Waits until every JSON log line queued so far is written, for up to `ms`: call it before process.exit. */
export function flushLogs(ms = 5_000): Promise<void> {
  const out = jsonOut;
  if (!out) return Promise.resolve();
  jsonOut = undefined;
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    out.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    out.end(); // writes what is queued, then closes
  });
}

export function createLogger(name: string): Logger {
  const level = process.env.LOG_LEVEL ?? "info";
  if (jsonLogs()) {
    jsonOut ??= pino.destination({ dest: 1, sync: false });
    return pino({ name, level, base: undefined }, jsonOut);
  }
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
  const rows = Object.entries(summary).map(([k, v]) => `  ${k.padEnd(width)}  ${cell(v)}`);
  process.stdout.write(`\n${rows.join("\n")}\n\n`);
}
