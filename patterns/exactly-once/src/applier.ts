// The applier: takes charge commands from the work queue, applies both effects, then acks with a
// double ack (ackAck: the server confirms). Delivery is at least once, so a command can arrive again
// after a crash, a lost ack or an ack that came after ack_wait; the effects are idempotent, so each is
// applied exactly once all the same.
import { type JsMsg, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Logger, MalformedPayload, pull, type Serving } from "@repo/kit";
import { type Applied, type Bank, chargeOutside, postToLedger } from "./effects.js";
import { type Charge, parseCharge } from "./producer.js";
import { COMMANDS, CONSUMER } from "./setup.js";

export interface Outcome {
  charge: Charge;
  applier: string;
  /** 1 on the first delivery. */
  delivery: number;
  ledger: Applied;
  bank: Applied;
  /** Whether the server confirmed the ack. A lost ack means the command comes back: harmless. */
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
}

export async function startApplier(o: ApplierOptions): Promise<Serving> {
  const js = jetstream(o.nc);
  const consumer = await js.consumers.get(COMMANDS, CONSUMER);
  const handle = async (m: JsMsg) => {
    let charge: Charge;
    try {
      charge = parseCharge(m.data);
    } catch (err) {
      if (!(err instanceof MalformedPayload)) throw err;
      o.log.warn({ applier: o.name, seq: m.seq, reason: err.message }, "malformed command: terminated, not applied");
      return m.term();
    }
    try {
      const ledger = await postToLedger(js, charge);
      const bank = await chargeOutside(o.states, o.bank, charge);
      await o.beforeAck?.(charge, m);
      const acked = await m.ackAck().catch(() => false);
      o.onOutcome?.({ charge, applier: o.name, delivery: m.info.deliveryCount, ledger, bank, acked });
    } catch (err) {
      // Not applied, or not both (a server restarting, a leader election): deliver it again soon.
      if (!o.nc.isClosed()) m.nak(500);
      o.log.warn({ applier: o.name, id: charge.id, err: String(err) }, "charge not applied yet; it will come back");
    }
  };
  // Small pulls: a command waiting in a client buffer runs its ack_wait down.
  return pull(consumer, handle, { nc: o.nc, log: o.log, who: { applier: o.name }, batch: 8 });
}
