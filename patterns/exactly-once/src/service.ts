// The applier service a starter deploys (`npm start`; the demo is `npm run demo`): creates or checks the
// streams, the consumer and the states bucket, applies charges until SIGTERM or SIGINT, then finishes
// the charge in hand (within STOP_DEADLINE_MS) and exits 0. BANK_DIR (default ./bank) stands in for
// the external system: replace directoryBank with your client, keyed by the charge id. The kit's
// runService gives the connection, HEALTH_PORT's /healthz and the stop.
import { jetstreamManager } from "@nats-io/jetstream";
import { isEntry, runService, stopWithin } from "@repo/kit";
import { startApplier } from "./applier.js";
import { directoryBank } from "./effects.js";
import { COMMANDS, CONSUMER, setup } from "./setup.js";

if (isEntry(import.meta.url)) {
  runService("exactly-once-service", async (nc, log) => {
    const jsm = await jetstreamManager(nc);
    const states = await setup(jsm, nc);
    const applier = await startApplier({
      nc,
      name: process.env.WORKER_NAME ?? `applier-${process.pid}`,
      states,
      bank: directoryBank(process.env.BANK_DIR ?? "bank"),
      log,
      onOutcome: (o) =>
        log.info(
          { id: o.charge.id, ledger: o.ledger, bank: o.bank, reason: o.reason, delivery: o.delivery },
          o.reason ? "refused" : "applied",
        ),
    });
    return {
      stop: (deadlineMs) => stopWithin(applier.stop(), deadlineMs, log),
      health: async () => {
        if (applier.stopped) throw new Error(applier.stopped); // the loop ended by itself: 503
        return { pending: (await jsm.consumers.info(COMMANDS, CONSUMER)).num_pending };
      },
    };
  });
}
