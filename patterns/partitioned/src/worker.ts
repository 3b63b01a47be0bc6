// A worker: reads the partitions it holds (leases.ts), one event in flight per partition, and applies
// each to its key's state in order (state.ts). Partitions run side by side; within one, the next
// event comes only after this one is acked.
//   applied -> ack. already (a redelivery, or a late worker's copy) -> ack, counted apart.
//   gap (an earlier event of the key is missing) -> handed back, the partition waits: an event is never skipped.
//   malformed -> ended with the reason (the kit's pull): it can never be applied.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, pull, type Serving, type Stoppable } from "@repo/kit";
import { holdPartitions } from "./leases.js";
import { type OrderEvent, parseEvent } from "./producer.js";
import { consumerFor, LEASES, STATE, STREAM, type Timings } from "./setup.js";
import { type Applied, applyInOrder } from "./state.js";

export interface Handled {
  worker: string;
  partition: number;
  event: OrderEvent;
  /** applied: its key's state changed; already: it had been (a redelivery or a late copy). */
  result: Exclude<Applied, "gap">;
}

export interface WorkerOptions {
  nc: NatsConnection;
  name: string;
  partitions: number;
  timings: Timings;
  log: Logger;
  /**
   * Your work for an event, before its key's state changes. At least once: it can run again for an
   * event (a redelivery, a late worker), so make it idempotent; the state change after it is made once.
   */
  work?: (e: OrderEvent) => Promise<void>;
  onHandled?: (h: Handled) => void;
}

export interface Worker extends Stoppable {
  name: string;
  /** The partitions it holds now. */
  held(): number[];
}

export async function startWorker(o: WorkerOptions): Promise<Worker> {
  const { nc, name, log } = o;
  const js = jetstream(nc);
  const kvm = new Kvm(nc);
  const [leasesKv, state] = await Promise.all([kvm.open(LEASES), kvm.open(STATE)]);
  const reading = new Map<number, Serving>();

  const handler = (partition: number) => async (m: JsMsg) => {
    const event = parseEvent(m.data);
    await o.work?.(event);
    const result = await applyInOrder(state, event);
    // The kit's pull() hands it back (in 1 s) and the partition waits for the missing one.
    if (result === "gap") throw new Error(`${event.key} seq ${event.seq} came before an earlier event of its key: held`);
    m.ack();
    o.onHandled?.({ worker: name, partition, event, result });
  };

  const leases = holdPartitions({
    kv: leasesKv,
    name,
    partitions: o.partitions,
    leaseMs: o.timings.leaseMs,
    log,
    async gained(p) {
      const consumer = await js.consumers.get(STREAM, consumerFor(p));
      // One in hand: the consumer lets one out at a time anyway (max_ack_pending 1).
      reading.set(p, await pull(consumer, handler(p), { nc, log, who: { worker: name, partition: String(p) }, batch: 1 }));
    },
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
