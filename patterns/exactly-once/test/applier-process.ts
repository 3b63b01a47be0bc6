// An applier in its own process, for the SIGKILL test: after both effects of charge DIE_AFTER, and
// before its ack, it prints "applied <id>" and kills itself (SIGKILL: no cleanup, no ack).
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { startApplier } from "../src/applier.js";
import { directoryBank } from "../src/effects.js";
import { STATES_BUCKET } from "../src/setup.js";

const nc = await connect({ servers: process.env.NATS_URL });
await startApplier({
  nc,
  name: "doomed",
  states: await new Kvm(nc).open(STATES_BUCKET),
  bank: directoryBank(process.env.BANK_DIR ?? ""),
  log: pino({ level: "silent" }),
  beforeAck: async (c) => {
    if (c.id !== process.env.DIE_AFTER) return;
    process.stdout.write(`applied ${c.id}\n`);
    process.kill(process.pid, "SIGKILL");
  },
});
process.stdout.write("ready\n");
