// A worker: reads the partitions it holds (leases.ts), one event in flight per partition, and applies
// each to its key's state in order (state.ts). Partitions run side by side; within one, the next
// event comes only after this one is acked.
//   applied -> ack. already (a redelivery, or a late worker's copy) -> ack, counted apart.
//   gap (an earlier event of its key never came) -> ended with the reason: it can never be applied in
//     order (its predecessor, were it still to come, would be behind it in the partition), and holding
//     it would stop every key of the partition. Logged as an error: the key needs repair.
//   malformed -> ended with the reason (the kit's pull): it can never be applied.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, MalformedPayload, pull, type Serving, type Stoppable, terminate, UserError } from "@repo/kit";
import { holdPartitions } from "./leases.js";
import { type OrderEvent, parseEvent } from "./producer.js";
import { consumerFor, LEASES, STATE, STREAM, type Timings } from "./setup.js";
import { type Applied, applyInOrder } from "./state.js";

export interface Handled {
  worker: string;
  partition: number;
  event: OrderEvent;
  /** applied: its key's state changed; already: it had been (a redelivery or a late copy); gap: ended, never applied. */
  result: Applied;
  /** 1 on the first delivery. */
  delivery: number;
}

export interface WorkerOptions {
  nc: NatsConnection;
  name: string;
  partitions: number;
  timings: Timings;
  log: Logger;
  /**
   * Your work for an event, run only when it is its key's next one, before its key's state changes. At
   * least once: a worker that lost its lease while paused may run it beside the new holder (the state
   * change after it is made once), so make it idempotent. Give it a timeout of its own: while it runs,
   * its event is kept alive and its partition waits.
   */
  work?: (e: OrderEvent, partition: number) => Promise<void>;
  onHandled?: (h: Handled) => void;
}

export interface Worker extends Stoppable {
  name: string;
  /** The partitions it holds now. */
  held(): number[];
}

export async function startWorker(o: WorkerOptions): Promise<Worker> {
  const { nc, name, log } = o;
  if (!/^[-\w]+$/.test(name)) throw new UserError(`worker name ${JSON.stringify(name)}: use letters, digits, - and _ (it is a KV key)`);
  const js = jetstream(nc);
  const kvm = new Kvm(nc);
  const [leasesKv, state] = await Promise.all([kvm.open(LEASES), kvm.open(STATE)]);
  const reading = new Map<number, Serving>();

  const handler = (partition: number) => async (m: JsMsg) => {
    const event = parseEvent(m.data);
    if (m.subject.split(".")[2] !== event.key) throw new MalformedPayload(`key ${event.key} on ${m.subject}`);
    const result = await applyInOrder(state, event, (e) => o.work?.(e, partition) ?? Promise.resolve());
    if (result === "gap") {
      const reason = `${event.key} seq ${event.seq} came before an earlier event of its key`;
      log.error({ worker: name, partition, key: event.key, seq: event.seq }, `${reason}: ended, never applied; the key needs repair`);
      terminate(m, reason, nc.info?.version);
    } else m.ack();
    o.onHandled?.({ worker: name, partition, event, result, delivery: m.info.deliveryCount });
  };

  const leases = holdPartitions({
    kv: leasesKv,
    name,
    partitions: o.partitions,
    leaseMs: o.timings.leaseMs,
    log,
    async gained(p) {
      const consumer = await js.consumers.get(STREAM, consumerFor(p));
      // The consumer lets one out at a time (max_ack_pending 1), so one pull of 32 brings them one
      // after another, each once the one before is acked: fewer pulls, not more in flight.
      reading.set(p, await pull(consumer, handler(p), { nc, log, who: { worker: name, partition: String(p) }, batch: 32 }));
    },
    reading: (p) => reading.get(p)?.stopped,
    async lost(p) {
      // Before any await: a partition taken again in the same round gets a reading of its own.
      const serving = reading.get(p);
      reading.delete(p);
      await serving?.stop();
    },
  });

  return {
    name,
    held: leases.held,
    stop: () => leases.stop(),
  };
}
