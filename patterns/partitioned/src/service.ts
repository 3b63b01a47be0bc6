// The worker service a starter deploys (`npm start`; the demo is `npm run demo`): it creates or
// checks the stream, the partition consumers and the buckets, and reads the partitions it holds with
// workEvent until SIGTERM or SIGINT; then it gives its partitions up (finishing the event in hand
// within STOP_DEADLINE_MS), and exits 0. Run as many instances as you like: they share the
// partitions. The kit's runService gives the connection, HEALTH_PORT's /healthz and the stop.
//
// Environment, besides the kit's: PARTITIONS (default 6; the same for every instance, fixed once the
// stream exists); WORKER_NAME (default <host name>-<pid>, unique per worker); LEASE_MS (default 10000,
// the same for every instance).
import { hostname } from "node:os";
import { jetstreamManager } from "@nats-io/jetstream";
import { intOption, isEntry, runService, stopWithin } from "@repo/kit";
import type { OrderEvent } from "./producer.js";
import { defaultTimings, setup } from "./setup.js";
import { startWorker } from "./worker.js";

/** Your work for an event, before its key's state changes: make it idempotent (it can run again). */
export const workEvent = async (_event: OrderEvent): Promise<void> => {};

if (isEntry(import.meta.url)) {
  runService("partitioned-service", async (nc, log) => {
    const partitions = intOption("PARTITIONS", process.env.PARTITIONS ?? "6");
    const timings = { ...defaultTimings, leaseMs: intOption("LEASE_MS", process.env.LEASE_MS ?? String(defaultTimings.leaseMs)) };
    await setup(await jetstreamManager(nc), nc, partitions, timings);
    // Unique per process, also where every container's process is PID 1: the host name (a container's
    // own), then the pid, as a KV key token.
    const name = process.env.WORKER_NAME ?? `${hostname()}-${process.pid}`.replace(/[^-\w]/g, "-");
    const worker = await startWorker({
      nc,
      name,
      partitions,
      timings,
      log,
      work: workEvent,
      onHandled: (h) => log.info({ key: h.event.key, seq: h.event.seq, partition: h.partition, result: h.result }, h.result),
    });
    log.info({ worker: name, partitions }, "worker started: taking its share of the partitions");
    return {
      stop: (deadlineMs) => stopWithin(worker.stop(), deadlineMs, log),
      health: async () => ({ worker: name, partitions: worker.held() }), // a reading that stops gives its partition up
    };
  });
}
