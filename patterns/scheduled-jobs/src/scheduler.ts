// Scheduling jobs: each schedule has a name (its subject is schedule.<name>, its jobs go to
// due.<name>) and carries the job's payload. Publishing a schedule under a name in use replaces it.
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager, type ScheduleSpec } from "@nats-io/jetstream";
import { connectFromEnv, intOption, isEntry, isNotFound, runMain, UserError } from "@repo/kit";
import { DUE_PREFIX, SCHEDULE_PREFIX, STREAM } from "./setup.js";

export interface Job {
  id: string;
  task: string;
  input?: unknown;
}

export type When =
  /** Once, at this time (nats-server 2.12+). */
  | { at: Date }
  /** Once, this many ms from now (2.12+). */
  | { inMs: number }
  /** Again every interval, e.g. "10s", "5m" (at least 1s; 2.14+). */
  | { every: string }
  /** A 6-field cron expression (sec min hour day month weekday) in an IANA time zone (2.14+). */
  | { cron: string; timezone?: string };

const NAME = /^[A-Za-z0-9_-]+$/;
export const scheduleSubject = (name: string) => `${SCHEDULE_PREFIX}.${name}`;
export const dueSubject = (name: string) => `${DUE_PREFIX}.${name}`;

function spec(when: When): ScheduleSpec {
  if ("at" in when) return { at: when.at };
  if ("inMs" in when) return { at: new Date(Date.now() + when.inMs) };
  if ("every" in when) return { every: when.every };
  return { cron: when.cron };
}

/**
 * Schedules `job` under `name` (letters, digits, - and _). Replaces a schedule of that name not yet
 * due: publishing it again is a debounce, the newest wins. Returns the schedule's stream sequence.
 */
export async function schedule(js: JetStreamClient, name: string, when: When, job: Job): Promise<number> {
  if (!NAME.test(name)) throw new UserError(`a schedule name is letters, digits, - and _ only: got "${name}"`);
  const timezone = "cron" in when ? when.timezone : undefined;
  const ack = await js.publish(scheduleSubject(name), JSON.stringify(job), {
    schedule: { specification: spec(when), target: dueSubject(name), ...(timezone ? { timezone } : {}) },
    expect: { streamName: STREAM },
  });
  return ack.seq;
}

/** Cancels the schedule `name`: its jobs already due stay queued; no more come. Returns whether there was one. */
export async function cancel(jsm: JetStreamManager, name: string): Promise<boolean> {
  try {
    return (await jsm.streams.purge(STREAM, { filter: scheduleSubject(name) })).purged > 0;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** The names of the schedules the stream holds now (done @at schedules are gone). */
export async function scheduled(jsm: JetStreamManager): Promise<string[]> {
  const { state } = await jsm.streams.info(STREAM, { subjects_filter: `${SCHEDULE_PREFIX}.>` });
  return Object.keys(state.subjects ?? {})
    .map((s) => s.slice(SCHEDULE_PREFIX.length + 1))
    .sort();
}

const usage = `usage: schedule <name> in <ms> | <name> every <interval, e.g. 30s> | <name> cron "<sec min hour dom mon dow>" [time zone]
       schedule cancel <name> | list`;

// CLI: `npm run schedule -- report in 60000`, `npm run schedule -- tick every 30s`,
// `npm run schedule -- nightly cron "0 0 5 * * *" America/Denver`, `npm run schedule -- cancel tick`.
if (isEntry(import.meta.url)) {
  runMain("schedule", async (_signal, log) => {
    const [first, second, third, fourth] = process.argv.slice(2);
    const nc = await connectFromEnv("scheduled-jobs-scheduler");
    try {
      const jsm = await jetstreamManager(nc);
      if (first === "list") return void log.info({ schedules: await scheduled(jsm) }, "schedules");
      if (first === "cancel" && second) return void log.info({ cancelled: await cancel(jsm, second) }, `cancel ${second}`);
      if (!first || !third) throw new UserError(usage);
      const when: When | undefined =
        second === "in"
          ? { inMs: intOption("ms", third) }
          : second === "every"
            ? { every: third }
            : second === "cron"
              ? { cron: third, timezone: fourth }
              : undefined;
      if (!when) throw new UserError(usage);
      const seq = await schedule(jetstream(nc), first, when, { id: `${first}-${Date.now().toString(36)}`, task: first });
      log.info({ schedule: first, when, seq }, "scheduled");
    } finally {
      await nc.close();
    }
  });
}
