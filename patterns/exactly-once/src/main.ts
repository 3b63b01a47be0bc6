// The demo `pnpm run pattern exactly-once` runs: charge commands published twice each (a producer
// retrying), two appliers, one whose connection dies after applying a charge but before its ack, one
// that acks a charge only after ack_wait ran out (so it is delivered again meanwhile), then it counts
// the effects: every charge in the ledger once and charged at the bank once, however often delivered;
// one charge the bank refuses for good (a closed account) ends with neither effect and is not retried.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, logSummary, runMain } from "@repo/kit";
import { type Outcome, startApplier } from "./applier.js";
import { type Bank, ChargeRefused, directoryBank } from "./effects.js";
import { charges, publishCharges } from "./producer.js";
import { COMMANDS, LEDGER, setup } from "./setup.js";

const usage = `usage: pnpm run pattern exactly-once [--charges N] [--json]
  --charges N   charge commands to publish, each twice (default 300)`;

const ackWaitMs = 2_000; // short, so the demo shows a late ack within seconds

runMain("exactly-once", async (signal, log) => {
  const options = demoOptions(usage, { charges: 300 });
  if (!options) return;
  const nc = await connectFromEnv("exactly-once-demo");
  const jsm = await jetstreamManager(nc);
  const states = await setup(jsm, nc, { ackWaitMs });
  const bankDir = mkdtempSync(join(tmpdir(), "exactly-once-bank-"));
  const keyed = directoryBank(bankDir);
  log.info(
    { server: nc.info?.version, bank: bankDir },
    `streams ${COMMANDS} (commands) and ${LEDGER} (effects), bucket charge_states; the "bank" is a directory with a unique key per charge`,
  );

  const run = Date.now().toString(36);
  const all = charges(options.charges, `ch-${run}`);
  const lostAck = all[7 % all.length]!.id;
  const lateAck = all[13 % all.length]!.id;
  const closed = all.length > 1 ? all[all.length - 1]!.id : undefined; // its account is closed: the bank says no
  const bank: Bank = {
    charge: async (c) => {
      if (c.id === closed) throw new ChargeRefused("account closed");
      return keyed.charge(c);
    },
    charged: keyed.charged,
  };
  const outcomes: Outcome[] = [];
  const staged = new Set<string>(); // each mishap happens once, to whichever applier gets the charge first
  const once = (id: string) => !staged.has(id) && Boolean(staged.add(id));
  const connections: NatsConnection[] = [];
  const appliers = [];
  for (const name of ["applier-1", "applier-2"]) {
    const anc = await connectFromEnv(`exactly-once-${name}`);
    connections.push(anc);
    const beforeAck = async (c: { id: string }) => {
      if (c.id === lostAck && once(c.id)) {
        log.warn(
          { applier: name, id: c.id },
          "connection dies after the effects, before the ack: the charge will be delivered again, to the other applier (this one is gone for the rest of the demo)",
        );
        await anc.close();
      }
      if (c.id === lateAck && once(c.id)) {
        log.warn(
          { applier: name, id: c.id },
          `slow: acking after ack_wait (${ackWaitMs}ms) ran out, so the charge is delivered again meanwhile (this applier waits ${(ackWaitMs + 1_000) / 1000}s: progress may stall that long)`,
        );
        await delay(ackWaitMs + 1_000);
      }
    };
    appliers.push(await startApplier({ nc: anc, name, states, bank, log, beforeAck, onOutcome: (o) => void outcomes.push(o) }));
  }

  // A producer that retries: every command published twice (the same msg id: stored once).
  const first = await publishCharges(nc, all);
  const again = await publishCharges(nc, all);
  log.info({ stored: first.stored, duplicates: again.duplicates }, "published every charge twice: the second time each was a duplicate");

  const ids = all.map((c) => c.id);
  const appliedOnce = () => new Set(outcomes.map((o) => o.charge.id)).size;
  for (let last = -1, idle = 0; appliedOnce() < ids.length && idle < 30 && !signal.aborted; await delay(1_000)) {
    idle = appliedOnce() === last ? idle + 1 : 0;
    last = appliedOnce();
    log.info({ applied: last, of: ids.length }, "progress");
  }
  const settleMs = ackWaitMs + 1_500; // let the late ack's second delivery arrive and be counted
  log.info({ wait_ms: settleMs }, `waiting ${settleMs / 1000}s for the late ack's second delivery, to count it`);
  await delay(settleMs);
  await Promise.all(appliers.map((a) => a.stop()));
  await Promise.all(connections.map((c) => (c.isClosed() ? undefined : c.drain())));

  const ledger = (await jsm.streams.info(LEDGER, { subjects_filter: "charges.ledger.>" })).state;
  const entries = new Set(Object.keys(ledger.subjects ?? {}).map((s) => s.split(".").at(-1)!));
  const charged = new Set(bank.charged());
  const left = (await jsm.streams.info(COMMANDS)).state.messages;
  await nc.drain();
  rmSync(bankDir, { recursive: true, force: true });
  const refused = new Set(outcomes.filter((o) => o.bank === "refused").map((o) => o.charge.id));
  // A charge the bank refused must have neither effect; every other one both.
  const missing = ids.filter((id) => !refused.has(id) && (!entries.has(id) || !charged.has(id))).length;
  const refusedWithEffect = [...refused].filter((id) => entries.has(id) || charged.has(id)).length;
  const ledgerTwice = ledger.messages - (ledger.num_subjects ?? entries.size);
  const summary = {
    charges: ids.length,
    deliveries: outcomes.length,
    redelivered: outcomes.length - appliedOnce(), // deliveries beyond the first: at-least-once at work
    ledger_entries: ledger.messages,
    bank_charges: charged.size,
    effects_skipped: outcomes.filter((o) => o.ledger === "already" || o.bank === "already").length,
    refused: refused.size, // ended by the bank's final no: terminated, neither effect applied
    refused_with_effect: refusedWithEffect,
    applied_twice: ledgerTwice,
    lost: missing, // a charge with an effect missing
    left_in_queue: left,
  };
  logSummary(
    log,
    summary,
    `summary: charges=${ids.length} deliveries=${outcomes.length} ledger_entries=${ledger.messages} bank_charges=${charged.size} refused=${refused.size} applied_twice=${ledgerTwice} lost=${missing}`,
  );
  if (missing > 0 || ledgerTwice > 0 || refusedWithEffect > 0 || charged.size !== ids.length - refused.size) process.exitCode = 1;
});
