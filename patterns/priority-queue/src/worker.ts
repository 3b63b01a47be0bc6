// Workers that serve high before normal before low.
// startWorker (every server): before each task, ask the levels' consumers in order with a no_wait
//   pull (an immediate "nothing here" instead of a long poll), so a high task is always taken before
//   a lower one that is also waiting. Optional weights serve lower levels a share when all are busy.
// startTierWorker (nats-server >= 2.11 / 2.12): the server picks, using a priority group.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import { type Msg, type NatsConnection, nanos } from "@nats-io/transport-node";
import { type Logger, serve } from "@repo/kit";
import { parseTask, type Task } from "./producer.js";
import { consumerFor, GROUP, LEVELS, type Level, STREAM } from "./setup.js";

export interface Done {
  task: Task;
  worker: string;
  /** performance.now() when the worker took the task: sorting by it gives the order tasks were taken. */
  startedAt: number;
}

/** The levels in the order the tasks were taken by any worker. */
export const takenOrder = (done: Done[]): Level[] => [...done].sort((a, b) => a.startedAt - b.startedAt).map((d) => d.task.level);

/** How many times a task was taken after a task of a lower level (0 = strict priority over a fixed backlog). */
export const outOfPriority = (levels: Level[]): number =>
  levels.filter((l, i) => i > 0 && LEVELS.indexOf(l) < LEVELS.indexOf(levels[i - 1]!)).length;

export interface PriorityWorkerOptions {
  nc: NatsConnection;
  name: string;
  handler: (task: Task) => Promise<void>;
  log: Logger;
  /** e.g. {high: 6, normal: 3, low: 1}: per round of 10 busy picks. Unset: strict priority. */
  weights?: Record<Level, number>;
  onDone?: (d: Done) => void;
}

export interface Stoppable {
  /** Stops taking tasks; the one in hand finishes and is acked. */
  stop(): Promise<void>;
}

const enc = new TextEncoder();

/** The task, or undefined (logged) when its payload is malformed. */
function checked(data: Uint8Array, log: Logger, worker: string): Task | undefined {
  try {
    return parseTask(data);
  } catch (err) {
    log.warn({ worker, reason: (err as Error).message }, "malformed task: terminated, not retried");
    return undefined;
  }
}

/** One task from a level, or null at once if it has none. */
async function pullNoWait(nc: NatsConnection, level: Level): Promise<Msg | null> {
  const subject = `$JS.API.CONSUMER.MSG.NEXT.${STREAM}.${consumerFor(level)}`;
  const r = await nc
    .request(subject, JSON.stringify({ batch: 1, no_wait: true }), { timeout: 5_000, noMux: true })
    .catch((err: unknown) => {
      if (nc.isClosed()) throw err;
      return null; // a timeout or a reconnect: treat the level as empty this time, the loop asks again
    });
  if (!r) return null;
  // A status reply (404 no messages, 408, 409) has a code and no ack subject; a task has both reply and no code.
  return r.reply && !(r.headers?.code ?? 0) ? r : null;
}

export async function startWorker(o: PriorityWorkerOptions): Promise<Stoppable> {
  const { nc, name, log } = o;
  let stopping = false;
  // A doorbell: publishes to tasks.* also reach core subscribers, so an idle worker wakes at once.
  let rang = false;
  let wake: (() => void) | undefined;
  const bell = nc.subscribe("tasks.*", {
    callback: () => {
      rang = true;
      wake?.();
    },
  });
  const idle = () =>
    rang || stopping
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const timer = setTimeout(() => wake?.(), 1_000); // redeliveries ring no bell: look again anyway
          wake = () => {
            clearTimeout(timer);
            wake = undefined;
            resolve();
          };
        });

  let credits = { ...o.weights } as Record<Level, number>;
  const pick = async (): Promise<Msg | null> => {
    if (!o.weights) {
      for (const level of LEVELS) {
        const m = await pullNoWait(nc, level);
        if (m) return m;
      }
      return null;
    }
    for (let pass = 0; pass < 2; pass++) {
      for (const level of LEVELS) {
        if (credits[level]! <= 0) continue;
        const m = await pullNoWait(nc, level);
        if (m) {
          credits[level]!--;
          return m;
        }
        credits[level] = 0; // empty now: it forfeits the rest of this round
      }
      credits = { ...o.weights }; // a new round
    }
    return null;
  };

  const loop = (async () => {
    while (!stopping) {
      rang = false;
      const m = await pick();
      if (!m) {
        await idle();
        continue;
      }
      const task = checked(m.data, log, name);
      if (!task) {
        nc.publish(m.reply!, enc.encode("+TERM")); // retrying cannot fix a malformed task
        continue;
      }
      const startedAt = performance.now();
      try {
        await o.handler(task);
        await nc.request(m.reply!, enc.encode("+ACK"), { timeout: 5_000 }); // confirmed ack
        o.onDone?.({ task, worker: name, startedAt });
      } catch (err) {
        log.warn({ worker: name, id: task.id, err: String(err) }, "task failed; back to its level in 1s");
        nc.publish(m.reply!, enc.encode(`-NAK ${JSON.stringify({ delay: nanos(1_000) })}`));
      }
    }
  })().catch((err: unknown) => {
    if (!nc.isClosed()) log.error({ worker: name, err: String(err) }, "worker stopped on an error");
  });

  return {
    async stop() {
      stopping = true;
      wake?.();
      await loop;
      bell.unsubscribe();
    },
  };
}

export interface TierWorkerOptions {
  nc: NatsConnection;
  stream: string;
  name: string;
  /** prioritized: 0 is the preferred tier, higher numbers fall back. overflow: { min_pending }. */
  pull: { priority: number } | { min_pending: number };
  handler: (task: Task) => Promise<void>;
  log: Logger;
  onDone?: (d: Done) => void;
}

/** A worker in a priority group: the server decides which tier gets each task. */
export async function startTierWorker(o: TierWorkerOptions): Promise<Stoppable> {
  const consumer = await jetstream(o.nc).consumers.get(o.stream, GROUP);
  // Plenty of room in each pull so a preferred worker always has a request waiting at the server.
  const messages = await consumer.consume({ group: GROUP, max_messages: 256, expires: 5_000, ...o.pull } as Parameters<
    typeof consumer.consume
  >[0]);
  const handle = async (m: JsMsg) => {
    const task = checked(m.data, o.log, o.name);
    if (!task) return m.term(); // retrying cannot fix a malformed task
    const startedAt = performance.now();
    await o.handler(task);
    await m.ackAck();
    o.onDone?.({ task, worker: o.name, startedAt });
  };
  return serve(messages, handle, { nc: o.nc, log: o.log, who: { worker: o.name } });
}
