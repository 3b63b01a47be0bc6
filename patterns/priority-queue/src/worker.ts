// Workers that serve high before normal before low.
// startWorker (every server): when its hand is empty, a worker asks the levels' consumers in order with
//   a no_wait pull (an immediate "nothing here" instead of a long poll) and takes up to `batch` tasks of
//   the highest level that has any, so no task is taken while a higher one is waiting. A doorbell hears
//   a higher task arrive while the hand holds lower ones: those not started go back at once. Optional
//   weights serve lower levels a share when all are busy.
// startTierWorker (nats-server >= 2.11 / 2.12): the server picks, using a priority group.
import { type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { deadline, type Msg, type NatsConnection, nanos } from "@nats-io/transport-node";
import { inboxFor, type Logger, pull, type Stoppable, sentTogether } from "@repo/kit";
import { parseTask, type Task } from "./producer.js";
import { consumerFor, GROUP, LEVELS, type Level, STREAM, subjectFor } from "./setup.js";

export interface Done {
  task: Task;
  worker: string;
  /** performance.now() when the worker took the task (pulled it into its hand): sorting by it gives the order tasks were taken. */
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
  /** Tasks taken per pull, from one level (default 16). 1: every task is the highest waiting when it starts. */
  batch?: number;
  /** Wait for the server to confirm each ack (one round trip per task). */
  confirmAcks?: boolean;
  onDone?: (d: Done) => void;
}

const enc = new TextEncoder();
const WPI = enc.encode("+WPI");
const ACK = enc.encode("+ACK");

/** The task, or undefined (logged) when its payload is malformed. */
function checked(data: Uint8Array, log: Logger, worker: string): Task | undefined {
  try {
    return parseTask(data);
  } catch (err) {
    log.warn({ worker, reason: (err as Error).message }, "malformed task: terminated, not retried");
    return undefined;
  }
}

/** A level's tasks in a worker's hand, all taken at `takenAt`. */
interface Hand {
  level: number;
  msgs: Msg[];
  takenAt: number;
}

/**
 * Pulls from one level's consumer with `no_wait`: up to `max` tasks that are waiting now, or none,
 * answered at once (the server ends a short batch with a 404/408 status) instead of a long poll.
 * One pull at a time per worker, on one inbox; a task that arrives after its pull gave up is nak'd
 * back at once rather than held until its ack_wait.
 */
function noWaitPuller(nc: NatsConnection) {
  const prefix = inboxFor(nc);
  let token = 0;
  let want: { token: number; level: Level; max: number; got: Msg[]; done: () => void } | undefined;
  const sub = nc.subscribe(`${prefix}.*`, {
    callback: (_err, m) => {
      // A status (404 no messages, 408 batch not filled) comes on the pull's own inbox, with a code and
      // no ack subject; a task keeps its own subject (tasks.<level>) and has an ack subject.
      if (!m.reply || (m.headers?.code ?? 0) > 0) {
        if (want && m.subject === `${prefix}.${want.token}`) want.done();
        return;
      }
      if (!want || m.subject !== subjectFor(want.level)) {
        m.respond(enc.encode("-NAK")); // late, from a pull that gave up: back for the next pull at once
        return;
      }
      want.got.push(m);
      if (want.got.length >= want.max) want.done();
    },
  });
  return {
    async pull(level: Level, max: number): Promise<Msg[]> {
      const t = ++token;
      const got: Msg[] = [];
      const ended = new Promise<void>((done) => (want = { token: t, level, max, got, done }));
      const request = JSON.stringify({ batch: max, no_wait: true });
      nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${STREAM}.${consumerFor(level)}`, request, { reply: `${prefix}.${t}` });
      // A lost answer (a reconnect) must not hang the worker: what came so far, and the loop asks again.
      await deadline(ended, 5_000).catch(() => undefined);
      want = undefined;
      return got;
    },
    close: () => sub.unsubscribe(),
  };
}

export async function startWorker(o: PriorityWorkerOptions): Promise<Stoppable> {
  const { nc, name, log } = o;
  const batch = o.batch ?? 16;
  let stopping = false;
  // A doorbell: publishes to tasks.* also reach core subscribers, so an idle worker wakes at once, and
  // a worker holding lower tasks hears a higher one arrive. `rung` is the highest level rung so far.
  const none: number = LEVELS.length;
  let rung = none;
  let wake: (() => void) | undefined;
  const bell = nc.subscribe("tasks.*", {
    callback: (_err, m) => {
      const level = LEVELS.findIndex((l) => subjectFor(l) === m.subject);
      if (level >= 0) rung = Math.min(rung, level);
      wake?.();
    },
  });
  const idle = () =>
    rung < none || stopping
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const timer = setTimeout(() => wake?.(), 1_000); // redeliveries ring no bell: look again anyway
          wake = () => {
            clearTimeout(timer);
            wake = undefined;
            resolve();
          };
        });
  const puller = noWaitPuller(nc);
  // Every task in hand, started or not, is kept alive (+WPI) every third of the shortest ack_wait:
  // a hand of slow tasks must not pass its ack_wait and be handed to another worker meanwhile.
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const ackWaits = await Promise.all(LEVELS.map(async (l) => (await jsm.consumers.info(STREAM, consumerFor(l))).config.ack_wait ?? 0));
  let current: Msg | undefined;
  const heartbeat = setInterval(
    () => {
      if (current) current.respond(WPI);
      for (const m of hand?.msgs ?? []) m.respond(WPI);
    },
    Math.max(100, Math.min(...ackWaits.map((ns) => ns || 30_000_000_000)) / 1_000_000 / 3), // 30 s: the server's default
  );

  let credits = { ...o.weights } as Record<Level, number>;
  const take = async (level: number, max: number): Promise<Hand | undefined> => {
    const msgs = await puller.pull(LEVELS[level]!, max);
    return msgs.length > 0 ? { level, msgs, takenAt: performance.now() } : undefined;
  };
  const pick = async (): Promise<Hand | undefined> => {
    rung = none; // from here on, a bell is news
    if (!o.weights) {
      for (let level = 0; level < LEVELS.length; level++) {
        const hand = await take(level, batch);
        if (hand) return hand;
      }
      return undefined;
    }
    for (let pass = 0; pass < 2; pass++) {
      for (let level = 0; level < LEVELS.length; level++) {
        const l = LEVELS[level]!;
        if (credits[l]! <= 0) continue;
        const hand = await take(level, Math.min(batch, credits[l]!));
        if (hand) {
          credits[l]! -= hand.msgs.length;
          return hand;
        }
        credits[l] = 0; // empty now: it forfeits the rest of this round
      }
      credits = { ...o.weights }; // a new round
    }
    return undefined;
  };
  /** Tasks in hand not yet started go back to their level at once (a nak without delay). */
  const handBack = (hand: Hand | undefined) => {
    for (const m of hand?.msgs.splice(0) ?? []) m.respond(enc.encode("-NAK"));
  };

  let hand: Hand | undefined;
  const acks = sentTogether(nc);
  const loop = (async () => {
    while (!stopping) {
      // Strict mode: a task of a higher level than the hand's arrived, so the rest of the hand goes back
      // and the next pick starts from the top again.
      if (hand && !o.weights && rung < hand.level) handBack(hand);
      if (!hand?.msgs.length) {
        hand = await pick();
        if (!hand) {
          await idle();
          continue;
        }
      }
      const m = hand.msgs.shift()!;
      current = m; // until it is answered below
      const task = checked(m.data, log, name);
      if (!task) {
        m.respond(enc.encode("+TERM")); // retrying cannot fix a malformed task
        current = undefined;
        continue;
      }
      let acked = false;
      try {
        await o.handler(task);
        if (o.confirmAcks) await nc.request(m.reply!, ACK, { timeout: 5_000 });
        else acks.later(() => m.respond(ACK)); // with the others of this turn, in one write (the kit's sentTogether)
        acked = true;
        o.onDone?.({ task, worker: name, startedAt: hand.takenAt });
      } catch (err) {
        // Acked already (onDone threw): done; a nak now would go out before the ack kept for later.
        if (acked) log.warn({ worker: name, id: task.id, err: String(err) }, "onDone failed; the task was acked");
        else {
          log.warn({ worker: name, id: task.id, err: String(err) }, "task failed; back to its level in 1s");
          m.respond(enc.encode(`-NAK ${JSON.stringify({ delay: nanos(1_000) })}`));
        }
      }
      current = undefined;
    }
  })().catch((err: unknown) => {
    if (!nc.isClosed()) log.error({ worker: name, err: String(err) }, "worker stopped on an error");
  });

  return {
    async stop() {
      stopping = true;
      wake?.();
      await loop;
      acks.flush();
      clearInterval(heartbeat);
      handBack(hand); // what was taken but not started is free for other workers now
      bell.unsubscribe();
      puller.close();
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
  /** Wait for the server to confirm each ack (one round trip per task). */
  confirmAcks?: boolean;
  onDone?: (d: Done) => void;
}

/** A worker in a priority group: the server decides which tier gets each task. */
export async function startTierWorker(o: TierWorkerOptions): Promise<Stoppable> {
  const consumer = await jetstream(o.nc).consumers.get(o.stream, GROUP);
  const handle = async (m: JsMsg) => {
    const task = checked(m.data, o.log, o.name);
    if (!task) return m.term(); // retrying cannot fix a malformed task
    const startedAt = performance.now();
    await o.handler(task);
    if (o.confirmAcks) await m.ackAck();
    else m.ack();
    o.onDone?.({ task, worker: o.name, startedAt });
  };
  // Plenty of room in the hand (256, fetched again when half is free) so a preferred worker nearly
  // always has a request waiting at the server; every task in hand is kept alive (working()).
  const pullWith = { group: GROUP, ...o.pull };
  return pull(consumer, handle, { nc: o.nc, log: o.log, who: { worker: o.name }, batch: 256, expiresMs: 5_000, pullWith });
}
