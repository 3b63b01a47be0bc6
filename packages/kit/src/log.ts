// Logging with pino: JSON lines for machines, one pretty line per event in a terminal, and a run's
// last word as a summary (a log line, plus a table for people).
import { type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger };

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
  const rows = Object.entries(summary).map(([k, v]) => `  ${k.padEnd(width)}  ${cell(v)}`);
  process.stdout.write(`\n${rows.join("\n")}\n\n`);
}
