// How to check a pattern's service (src/service.ts, a starter's `npm start`) from outside: a command
// that feeds it work from another process, the log line it writes per piece of work, and how many of
// them the feed makes. Used by the starters' tests (`pnpm run new`) and the fault suite.
export interface ServiceCheck {
  /** A src/ entry and its arguments, run with tsx in the pattern's directory. */
  feed: string[];
  /** The `msg` of the service's JSON log line for each piece of work done. */
  msg: string;
  /** How many such lines the feed makes at least (at least once: a redelivery may add one). */
  count: number;
  /**
   * A service that listens (HTTP): the variable that sets its port, and the one that gives the feed
   * its URL (http://127.0.0.1:<port>).
   */
  listen?: { port: string; url: string };
}

export const serviceChecks: Record<string, ServiceCheck> = {
  "work-queue": { feed: ["src/producer.ts", "20"], msg: "processed", count: 20 },
  "priority-queue": { feed: ["src/producer.ts", "high", "10"], msg: "done", count: 10 },
  fanout: { feed: ["src/producer.ts", "5"], msg: "event", count: 15 },
  "exactly-once": { feed: ["src/producer.ts", "10"], msg: "applied", count: 10 },
  "scheduled-jobs": { feed: ["src/scheduler.ts", "check", "in", "1000"], msg: "ran", count: 1 },
  "ordered-replay": { feed: ["src/producer.ts", "10"], msg: "event", count: 10 },
  "event-sourcing": { feed: ["src/command.ts", "open", "check", "ann"], msg: "projected", count: 1 },
  "dedup-publish": { feed: ["src/post.ts", "10"], msg: "stored", count: 10, listen: { port: "INGEST_PORT", url: "INGEST_URL" } },
  "request-reply": { feed: ["src/caller.ts", "10"], msg: "answered", count: 10 },
  partitioned: { feed: ["src/producer.ts", "5", "4"], msg: "applied", count: 20 },
};
