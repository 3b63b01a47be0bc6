// The projection service a starter deploys (`npm start`; the demo is `npm run demo`): creates or
// checks the stream, the buckets and the projection's durable consumer, and keeps each account's
// balance in the bucket account_balances from the events, until SIGTERM or SIGINT; then it finishes
// the event in hand within STOP_DEADLINE_MS and exits 0. Instances share the consumer; each balance
// keeps the last sequence it counted, so a redelivered event is never counted twice. Commands come from
// the application (`npm run command -- deposit <account> <amount>`). The kit's runService gives the
// connection, HEALTH_PORT's /healthz and the stop.
import { jetstreamManager } from "@nats-io/jetstream";
import { isEntry, runService, stopWithin } from "@repo/kit";
import { startProjection } from "./projection.js";
import { PROJECTION, STREAM, setup } from "./setup.js";

if (isEntry(import.meta.url)) {
  runService("event-sourcing-service", async (nc, log) => {
    const jsm = await jetstreamManager(nc);
    const { balances } = await setup(jsm, nc);
    const projection = await startProjection({
      nc,
      balances,
      log,
      onEvent: (account, seq, counted) => log.info({ account, seq, counted }, "projected"),
    });
    return {
      stop: (deadlineMs) => stopWithin(projection.stop(), deadlineMs, log),
      health: async () => {
        if (projection.stopped) throw new Error(projection.stopped); // the loop ended by itself: 503
        return { pending: (await jsm.consumers.info(STREAM, PROJECTION)).num_pending };
      },
    };
  });
}
