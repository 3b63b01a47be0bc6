// The scenarios of native priority groups that the demo narrates and the tests assert on: each
// starts its workers, publishes, waits until every task is done, stops its workers and returns what
// happened. Servers before 2.11 (overflow) or 2.12 (prioritized) have no such groups: setup says so.
import { delay, type NatsConnection } from "@nats-io/transport-node";
import type { Logger, Stoppable } from "@repo/kit";
import { publishTasks, tasksAt } from "./producer.js";
import { OVERFLOW_STREAM, TIERED_STREAM } from "./setup.js";
import { type Done, startTierWorker } from "./worker.js";

const work = async () => void (await delay(2));

/** Waits until `check` holds; after `ms` it throws, naming what did not happen. */
async function until(what: string, check: () => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms / 1000}s`);
    await delay(20);
  }
}

/**
 * A prioritized group (2.12+): a preferred tier (priority 0) and a fallback tier (priority 1) pull
 * side by side. `first` tasks are published while both pull, then the preferred tier stops and
 * `then` more are published. Returns the tasks done in each phase.
 */
export async function tiers(nc: NatsConnection, log: Logger, prefix: string, first = 100, then = 40) {
  const done: Done[] = [];
  const tier = (name: string, priority: number) =>
    startTierWorker({ nc, stream: TIERED_STREAM, name, pull: { priority }, handler: work, log, onDone: (d) => void done.push(d) });
  const publish = (part: string, n: number) =>
    publishTasks(nc, tasksAt("normal", n, `${prefix}${part}`), { subject: () => "tiered.tasks.render", stream: TIERED_STREAM });
  const preferred = await tier("preferred", 0);
  const fallback = await tier("fallback", 1);
  try {
    await delay(300); // both pull requests are waiting at the server
    await publish("a", first);
    await until(`${first} tasks done`, () => done.length === first);
    await preferred.stop();
    await publish("b", then);
    await until(`${first + then} tasks done`, () => done.length === first + then);
    return { whileBoth: done.slice(0, first), afterStop: done.slice(first) };
  } finally {
    await Promise.all([preferred.stop(), fallback.stop()]);
  }
}

/**
 * An overflow group (2.11+): a worker with min_pending 20 is served only while the backlog is at or
 * above 20. A backlog of 10 first, then 15 more (25: it is served at 25, 24 … 20, six tasks), then a
 * regular worker takes the rest. Returns what the overflow worker got of each backlog, and all done.
 */
export async function overflow(nc: NatsConnection, log: Logger, prefix: string) {
  const done: Done[] = [];
  const worker = (name: string, min_pending: number) =>
    startTierWorker({ nc, stream: OVERFLOW_STREAM, name, pull: { min_pending }, handler: work, log, onDone: (d) => void done.push(d) });
  const publish = (part: string, n: number) =>
    publishTasks(nc, tasksAt("normal", n, `${prefix}${part}`), { subject: () => "overflow.tasks.render", stream: OVERFLOW_STREAM });
  const started: Stoppable[] = [];
  try {
    const spill = await worker("overflow", 20);
    started.push(spill);
    await publish("a", 10);
    await delay(500);
    const ofTen = done.length;
    await publish("b", 15);
    await until("the overflow worker served", () => done.length > 0);
    await delay(500);
    const ofTwentyFive = done.length;
    await spill.stop();
    started.push(await worker("regular", 0));
    await until("25 tasks done", () => done.length === 25);
    return { ofTen, ofTwentyFive, done };
  } finally {
    await Promise.all(started.map((w) => w.stop()));
  }
}
