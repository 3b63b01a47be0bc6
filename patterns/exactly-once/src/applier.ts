// The applier: takes charge commands from the work queue, applies both effects, then acks with a
// double ack (ackAck: the server confirms). Delivery is at least once, so a command can arrive again
// after a crash, a lost ack or an ack that came after ack_wait; the effects are idempotent, so each is
// applied exactly once all the same.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, pull, type Serving, terminate } from "@repo/kit";
import { type Applied, type Bank, ChargeRefused, chargeOutside, postToLedger } from "./effects.js";
import { type Charge, parseCharge } from "./producer.js";
import { COMMANDS, CONSUMER, LOUD_AFTER } from "./setup.js";

/** After a passing failure: 0.5 s, doubling, at most `maxMs` (30 s by default). */
const retryDelay = (delivery: number, maxMs: number) => Math.min(500 * 2 ** (delivery - 1), maxMs);

export interface Outcome {
  charge: Charge;
  applier: string;
  /** 1 on the first delivery. */
  delivery: number;
  /** "skipped": not posted, because the bank refused the charge. */
  ledger: Applied | "skipped";
  bank: Applied | "refused";
  /** Why the bank refused it (the command is then terminated: it never comes back). */
  reason?: string;
  /** Whether the server confirmed the ack (a term is not confirmed: false). A lost ack means the command comes back: harmless. */
  acked: boolean;
}

export interface ApplierOptions {
  nc: NatsConnection;
  name: string;
  states: KV;
  bank: Bank;
  log: Logger;
  /** Runs after both effects and before the ack: the demo and the tests put crashes and delays here. */
  beforeAck?: (c: Charge, m: JsMsg) => Promise<void>;
  onOutcome?: (o: Outcome) => void;
  /** The longest pause between tries after a passing failure (default 30 s; the tests shorten it). */
  retryMaxMs?: number;
}

export async function startApplier(o: ApplierOptions): Promise<Serving> {
  const js = jetstream(o.nc);
  const consumer = await js.consumers.get(COMMANDS, CONSUMER);
  const handle = async (m: JsMsg) => {
    const charge = parseCharge(m.data); // malformed: pull() ends it with the reason (+TERM), logged
    const delivery = m.info.deliveryCount;
    try {
      // The effect that can be refused for good goes first: a refused charge leaves no ledger entry.
      const bank = await chargeOutside(o.states, o.bank, charge);
      const ledger = await postToLedger(js, charge);
      await o.beforeAck?.(charge, m);
      const acked = await m.ackAck().catch(() => false);
      o.onOutcome?.({ charge, applier: o.name, delivery, ledger, bank, acked });
    } catch (err) {
      if (err instanceof ChargeRefused) {
        o.log.warn({ applier: o.name, id: charge.id, reason: err.message }, "charge refused by the bank: terminated, no effect applied");
        terminate(m, `refused: ${err.message}`, o.nc.info?.version);
        o.onOutcome?.({ charge, applier: o.name, delivery, ledger: "skipped", bank: "refused", reason: err.message, acked: false });
        return;
      }
      if (o.nc.isClosed()) return; // we are going away: the command comes back after ack_wait
      // Not applied, or not both (a server restarting, a leader election, the bank away): tried again,
      // for as long as it takes. It is never ended here: the bank may have taken it, and a command
      // ended then would leave the charge without its ledger entry. Past LOUD_AFTER tries, each is an error.
      m.nak(retryDelay(delivery, o.retryMaxMs ?? 30_000));
      const line = { applier: o.name, id: charge.id, delivery, err: String(err) };
      if (delivery >= LOUD_AFTER) o.log.error(line, "charge still not applied; it will come back (reconcile by its id if this goes on)");
      else o.log.warn(line, "charge not applied yet; it will come back");
    }
  };
  // Small pulls: a command waiting in a client buffer runs its ack_wait down.
  return pull(consumer, handle, { nc: o.nc, log: o.log, who: { applier: o.name }, batch: 8 });
}
