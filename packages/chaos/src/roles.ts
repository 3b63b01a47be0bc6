// What a worker process can run. Each role reports what it did as JSON lines, each line printed
// before the acknowledgement it describes is sent, so a kill between the two shows as a repeat,
// never as a loss; and `close()` closes its connection as a network fault would, then connects again.

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Command } from "@patterns/event-sourcing/account";
import { startProjection } from "@patterns/event-sourcing/projection";
import { BALANCES } from "@patterns/event-sourcing/setup";
import { execute } from "@patterns/event-sourcing/store";
import { startApplier } from "@patterns/exactly-once/applier";
import { type Bank, ChargeRefused, directoryBank } from "@patterns/exactly-once/effects";
import { STATES_BUCKET } from "@patterns/exactly-once/setup";
import { startSubscriber } from "@patterns/fanout/consumer";
import type { Retention } from "@patterns/fanout/setup";
import { replay } from "@patterns/ordered-replay/replayer";
import { POSITIONS_BUCKET } from "@patterns/ordered-replay/setup";
import { startWorker as startPartitionWorker } from "@patterns/partitioned/worker";
import { openStatus } from "@patterns/work-queue/status/status";
import { withStatus } from "@patterns/work-queue/status/tracked";
import { startWorker } from "@patterns/work-queue/worker";
import { pino } from "pino";
import type { Line } from "./pool.js";

export type Role = (
  options: Line & { name: string },
  connection: () => Promise<NatsConnection>,
  out: (l: Line) => void,
) => Promise<{ close(): Promise<void>; command?(line: Line): Promise<void> }>;

const silent = pino({ level: "silent" });

/**
 * What a role runs on its connection, started again after close(): the close is abrupt (no drain:
 * messages in hand are not acked, the server redelivers them), as a network fault is.
 */
async function restarting<T extends { nc: NatsConnection; stop(): Promise<unknown> }>(run: () => Promise<T>) {
  const r = {
    current: await again(run),
    async close() {
      await r.current.nc.close();
      await r.current.stop();
      r.current = await again(run);
    },
  };
  return r;
}

/** `start` until it succeeds (the server may be restarting: JetStream answers a little after it listens), for up to 30 s. */
async function again<T>(start: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await start();
    } catch (err) {
      if (tries >= 120) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A work-queue worker with job status: it runs the handler, records "done", then acks. */
const workQueueWorker: Role = async (o, connection, out) => {
  const retry = o.retry as { backoffMs: number[]; maxDeliver: number; ackWaitMs: number };
  const run = async () => {
    const nc = await connection();
    const worker = await startWorker({
      nc,
      name: o.name,
      log: silent,
      retry,
      concurrency: 2,
      handler: withStatus(
        async (job) => {
          await new Promise((r) => setTimeout(r, 20)); // long enough for a fault to land mid-job
          if (job.task === "poison") throw new Error("poison job");
          out({ ran: job.id });
        },
        { store: await openStatus(nc), nc, log: silent },
      ),
    });
    return { nc, stop: () => worker.stop() };
  };
  return restarting(run);
};

/**
 * An exactly-once applier. Its bank is a directory shared by every applier of the schedule (a unique
 * key per charge, like a database's): it prints each charge it applied, and refuses for good a charge
 * of 13 cents (an account closed).
 */
const exactlyOnceApplier: Role = async (o, connection, out) => {
  const keyed = directoryBank(o.bankDir as string);
  const bank: Bank = {
    async charge(c) {
      if (c.amount === 13) throw new ChargeRefused("account closed");
      const r = await keyed.charge(c);
      if (r === "applied") out({ bank_applied: c.id });
      return r;
    },
    charged: keyed.charged,
  };
  const run = async () => {
    const nc = await connection();
    const states = await new Kvm(nc).open(STATES_BUCKET);
    const applier = await startApplier({ nc, name: o.name, states, bank, log: silent, retryMaxMs: 500 });
    return { nc, stop: () => applier.stop() };
  };
  return restarting(run);
};

/**
 * An event-sourcing process: a projection instance on the shared consumer, and commands executed as
 * they come on stdin ({"execute": command}), each answered with a line: accepted or why not, or the
 * error that ended it (then it may or may not be stored).
 */
const eventSourcing: Role = async (o, connection, out) => {
  const atomic = o.atomic as boolean;
  const run = async () => {
    const nc = await connection();
    const balances = await new Kvm(nc).open(BALANCES);
    const projection = await startProjection({ nc, balances, log: silent });
    return { nc, stop: () => projection.stop(), js: jetstream(nc), jsm: await jetstreamManager(nc) };
  };
  const running = await restarting(run);
  return {
    close: running.close,
    async command(line) {
      const { js, jsm } = running.current;
      const c = line.execute as Command;
      try {
        const r = await execute(js, jsm, atomic, c);
        out({ result: c.id, accepted: r.accepted, ...(r.accepted ? {} : { reason: r.reason }) });
      } catch (err) {
        out({ result: c.id, error: String(err) });
      }
    },
  };
};

/**
 * An ordered replayer that follows the ledger and resumes where it left off (its position saved every
 * 10 events): it prints each event's seq with the run of the replay it came in (a connection closed
 * starts a new one, resuming).
 */
const orderedReplayer: Role = async (o, connection, out) => {
  let runs = 0;
  const start = async () => {
    const nc = await connection();
    const positions = await new Kvm(nc).open(POSITIONS_BUCKET);
    const abort = new AbortController();
    // A replay that ends with an error (a timeout while the server restarts) is started again, resuming,
    // as a supervisor restarts a service that exited: each start is a run of its own.
    const done = (async () => {
      while (!abort.signal.aborted && !nc.isClosed()) {
        const run = `${o.name}/${runs++}`;
        try {
          await replay({
            nc,
            name: "chaos",
            positions,
            from: "resume",
            follow: true,
            signal: abort.signal,
            checkpointEvery: 10,
            log: silent,
            handler: (e) => out({ seq: e.seq, run }),
          });
        } catch (err) {
          if (nc.isClosed()) return; // ended by close() below
          out({ ended: run, error: String(err) });
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    })();
    return {
      nc,
      stop: () => {
        abort.abort();
        return done;
      },
    };
  };
  return restarting(start);
};

/** A fanout subscriber: its consumer's events, each printed (order id and number) before its ack. */
const fanoutSubscriber: Role = async (o, connection, out) => {
  const run = async () => {
    const nc = await connection();
    const subscriber = await startSubscriber({
      nc,
      retention: o.retention as Retention,
      name: o.consumer as string,
      log: silent,
      handler: async (e) => {
        await new Promise((r) => setTimeout(r, 2));
        out({ consumer: o.consumer, order: e.orderId, n: e.n });
      },
    });
    return { nc, stop: () => subscriber.stop() };
  };
  return restarting(run);
};

/**
 * A partitioned worker: its work prints the event's key and seq (it runs only for a key's next event),
 * then each event handled is printed with its result (applied, already, gap) after its ack.
 */
const partitionedWorker: Role = async (o, connection, out) => {
  const run = async () => {
    const nc = await connection();
    const worker = await startPartitionWorker({
      nc,
      name: o.name,
      partitions: o.partitions as number,
      timings: o.timings as { leaseMs: number; ackWaitMs: number },
      log: silent,
      work: async (e) => {
        out({ work: o.name, key: e.key, seq: e.seq });
        await new Promise((r) => setTimeout(r, 25)); // long enough for a fault to land mid-event
      },
      onHandled: (h) => out({ key: h.event.key, seq: h.event.seq, result: h.result }),
    });
    return { nc, stop: () => worker.stop() };
  };
  return restarting(run);
};

export const roles: Record<string, Role> = {
  "partitioned-worker": partitionedWorker,
  "ordered-replayer": orderedReplayer,
  "fanout-subscriber": fanoutSubscriber,
  "event-sourcing": eventSourcing,
  "work-queue-worker": workQueueWorker,
  "exactly-once-applier": exactlyOnceApplier,
};
