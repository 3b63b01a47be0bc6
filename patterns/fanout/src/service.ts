// One subscriber service a starter deploys (`npm start`; the demo is `npm run demo`): SERVICE_NAME
// (default billing) is its durable consumer on the stream RETENTION picks (limits, the default, or
// interest). It handles every event with handleEvent until SIGTERM or SIGINT, then finishes the event
// in hand (within STOP_DEADLINE_MS) and exits 0. Instances with the same SERVICE_NAME share the work;
// each name gets every event. The kit's runService gives the connection, HEALTH_PORT's /healthz and the stop.
import { jetstreamManager } from "@nats-io/jetstream";
import { isEntry, runService, stopWithin, UserError } from "@repo/kit";
import { startSubscriber } from "./consumer.js";
import type { OrderEvent } from "./producer.js";
import { addConsumer, type Retention, setupStreams, streams } from "./setup.js";

export const handleEvent = async (_event: OrderEvent): Promise<void> => {};

if (isEntry(import.meta.url)) {
  runService("fanout-service", async (nc, log) => {
    const name = process.env.SERVICE_NAME ?? "billing";
    const retention = (process.env.RETENTION ?? "limits") as Retention;
    if (!(retention in streams)) throw new UserError(`RETENTION must be limits or interest, got "${retention}"`);
    const jsm = await jetstreamManager(nc);
    await setupStreams(jsm);
    await addConsumer(jsm, retention, name); // only its own: see setup.ts
    const sub = await startSubscriber({
      nc,
      retention,
      name,
      log,
      handler: handleEvent,
      onEvent: (r) => log.info({ order: r.event.orderId, type: r.event.type, seq: r.seq }, "event"),
    });
    return {
      stop: (deadlineMs) => stopWithin(sub.stop(), deadlineMs, log),
      health: async () => {
        if (sub.stopped) throw new Error(sub.stopped);
        return { consumer: name, pending: (await jsm.consumers.info(streams[retention].name, name)).num_pending };
      },
    };
  });
}
