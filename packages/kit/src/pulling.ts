// Pulls for a worker that handles many messages at once (work-queue's workers): one long-lived inbox
// per worker, and a pull request to it whenever the worker has free slots (startPulling), and the
// loop around it (pullIntoSlots): slots, a heartbeat for what is in hand, a stop with a deadline.
// nats.js's fetch() opens and closes a subscription per pull (with its own timers); its consume()
// refills as messages arrive rather than as they are handled, so jobs would wait in a client buffer
// while their ack_wait runs. This asks the server for exactly as many jobs as there are free slots,
// on one subscription.
import { delay, type Msg, type MsgHdrs, type NatsConnection, nanos } from "@nats-io/transport-node";
import { inboxFor } from "./connect.js";
import { explain, type Refusal } from "./errors.js";
import type { Logger } from "./log.js";
import type { Stoppable } from "./serve.js";

const ACK = Uint8Array.of(43, 65, 67, 75); // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75); // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73); // +WPI
const TERM = Uint8Array.of(43, 84, 69, 82, 77); // +TERM
const encoder = new TextEncoder();

/**
 * The delivery count and stream sequence in the ack subject JetStream sends a delivery of `stream`'s
 * `consumer` with: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
 * or from 2.10 with `<domain>.<account hash>` after `$JS.ACK` and a token at the end. Undefined for any
 * other reply subject: a message someone published to the pull's inbox is not a delivery.
 */
export function ackInfo(reply: string, stream: string, consumer: string): { delivered: number; seq: number } | undefined {
  const t = reply.split(".");
  if (t[0] !== "$JS" || t[1] !== "ACK") return undefined;
  // Tokens after the pending count (the random one, any a later server adds) are not read, as nats.go does.
  const at = t.length === 9 ? 2 : t.length >= 11 ? 4 : -1;
  if (at < 0 || t[at] !== stream || t[at + 1] !== consumer) return undefined;
  // delivered, stream seq, consumer seq, a timestamp in nanoseconds (19 digits), pending
  const counts = t.slice(at + 2, at + 7);
  if (counts.length < 5 || !counts.every((c) => /^\d+$/.test(c))) return undefined;
  const [delivered, seq] = counts.map(Number) as [number, number];
  const whole = (n: number) => Number.isSafeInteger(n) && n >= 1;
  return whole(delivered) && whole(seq) ? { delivered, seq } : undefined;
}

/** A delivered job message and its acknowledgements (a subset of nats.js's JsMsg). */
export class Delivery {
  private acked = false;
  constructor(
    private readonly msg: Msg,
    private readonly nc: NatsConnection,
    /** 1 on the first delivery. */
    readonly deliveryCount: number,
    readonly seq: number,
  ) {}
  get subject(): string {
    return this.msg.subject;
  }
  get data(): Uint8Array {
    return this.msg.data;
  }
  get headers(): MsgHdrs | undefined {
    return this.msg.headers;
  }
  private answer(payload: Uint8Array) {
    if (this.acked) return; // the first ack, nak or term is the one that counts
    this.acked = true;
    this.msg.respond(payload);
  }
  ack() {
    this.answer(ACK);
  }
  /** Back to the queue, after `delayMs` if given. */
  nak(delayMs?: number) {
    this.answer(delayMs ? encoder.encode(`-NAK {"delay":${nanos(delayMs)}}`) : NAK);
  }
  /** Never again; the reason is shown in the server's advisory (nats-server 2.10.4 and later). */
  term(reason?: string) {
    this.answer(reason ? encoder.encode(`+TERM ${reason}`) : TERM);
  }
  /** Still being worked on: the job's ack_wait starts again. */
  working() {
    if (!this.acked) this.msg.respond(WPI);
  }
  /** An ack the server confirms: true once it did, false if it did not answer in time. */
  async ackAck(timeoutMs = 5_000): Promise<boolean> {
    if (this.acked) return false;
    this.acked = true;
    return this.nc
      .request(this.msg.reply as string, ACK, { timeout: timeoutMs })
      .then(() => true)
      .catch(() => false);
  }
}

export interface Puller {
  /** Jobs asked for and not yet received. */
  readonly asked: number;
  /** Asks the server for `n` more jobs (a pull request that expires after expiresMs). */
  ask(n: number): void;
  /** Stops asking; resolves once every pull has ended (within about expiresMs), then unsubscribes. */
  close(): Promise<void>;
}

export interface PullerOptions {
  stream: string;
  consumer: string;
  expiresMs: number;
  /** A job arrived: it is the caller's now. */
  onJob: (d: Delivery) => void;
  /** `asked` went down without a job (pulls expired or were refused): maybe time to ask again. */
  onChange: () => void;
  /** Every expiresMs: a place to notice a refusal to pull. */
  onTick?: () => void;
  /** A message with a reply subject that is not this consumer's ack subject: not a job, ignored. */
  onStray?: (subject: string) => void;
  /** A status that ended pulls without saying how many (a leader change, the consumer deleted). */
  onStatus?: (code: number, description: string) => void;
}

export function startPulling(nc: NatsConnection, o: PullerOptions): Puller {
  const next = `$JS.API.CONSUMER.MSG.NEXT.${o.stream}.${o.consumer}`;
  const inbox = inboxFor(nc);
  let asked = 0;
  let heard = Date.now();
  let ended: (() => void) | undefined;
  let closing: Promise<void> | undefined;
  let forget: ReturnType<typeof setTimeout> | undefined;
  const lessAsked = (n: number) => {
    asked = Math.max(0, asked - n);
    if (asked === 0) ended?.();
  };
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err) return;
      if (msg.reply) {
        const info = ackInfo(msg.reply, o.stream, o.consumer);
        if (!info) {
          // Not a delivery of ours: not an answer to our pulls. One that looks like JetStream's (an ack
          // subject we cannot read) still took a place in a pull, so it is counted as come.
          if (msg.reply.startsWith("$JS.ACK.")) {
            lessAsked(1);
            o.onChange();
          }
          return o.onStray?.(msg.subject);
        }
        heard = Date.now();
        lessAsked(1);
        o.onJob(new Delivery(msg, nc, info.delivered, info.seq));
        return;
      }
      // A status: 408 when a pull expired (it says how many of its jobs never came), 409 when the server
      // ended it for another reason. 100 (an idle heartbeat) comes only to pulls that ask for one, which
      // ours do not: should one come, it ends nothing.
      const h = msg.headers;
      if (!h) return; // not from the server
      heard = Date.now();
      if (h.code === 100) return;
      const left = h.get("Nats-Pending-Messages");
      if (left) {
        lessAsked(Number(left));
        o.onChange();
        return;
      }
      // Ended without saying how many (503 no responders: the consumer is gone or JetStream is down):
      // forget every pull, after a pause so that a lasting cause is not asked again in a tight loop. At
      // worst a few more jobs than free slots arrive.
      o.onStatus?.(h.code, h.description);
      forget ??= setTimeout(() => {
        forget = undefined;
        lessAsked(asked);
        o.onChange();
      }, 250);
    },
  });
  // A reconnect: the pulls asked on the old connection may be gone (a restarted server forgot them and
  // never answers them, while new pulls' 408s keep the silence below from ever lasting): forget them
  // and ask again. At worst a few more jobs than free slots arrive, from a server that kept them.
  const statuses = nc.status()[Symbol.asyncIterator]();
  void (async () => {
    for (let s = await statuses.next(); !s.done; s = await statuses.next()) {
      if (s.value.type !== "reconnect" || asked === 0) continue;
      lessAsked(asked);
      o.onChange();
    }
  })().catch(() => {}); // the status stream ends with the connection: nothing to do then
  // A pull lost on the way without a reconnect never answers: after two expiries of silence it is
  // forgotten and the worker asks again.
  const tick = setInterval(() => {
    o.onTick?.();
    if (asked > 0 && Date.now() - heard > 2 * o.expiresMs + 1_000) {
      lessAsked(asked);
      o.onChange();
    }
  }, o.expiresMs);
  return {
    get asked() {
      return asked;
    },
    ask(n: number) {
      if (asked === 0) heard = Date.now();
      asked += n;
      nc.publish(next, JSON.stringify({ batch: n, expires: nanos(o.expiresMs) }), { reply: inbox });
    },
    close() {
      closing ??= (async () => {
        if (asked > 0 && !nc.isClosed()) {
          const waited = new Promise<void>((r) => (ended = r));
          const timer = setTimeout(() => ended?.(), 2 * o.expiresMs + 1_000);
          await waited;
          clearTimeout(timer);
        }
        clearInterval(tick);
        clearTimeout(forget);
        void statuses.return?.();
        if (!nc.isClosed()) sub.unsubscribe();
      })();
      return closing;
    },
  };
}

export interface SlotsOptions {
  stream: string;
  consumer: string;
  /** Messages handled at once. */
  concurrency: number;
  /** Every message in hand for this long gets working() (a third of the consumer's ack_wait). */
  beatEveryMs: number;
  /**
   * Handles a message and answers it (ack, nak, term); a throw is logged and the message comes back
   * after ack_wait. The message is kept alive (working()) for as long as this runs; what runs inside
   * `hand.holding()` (the user's handler) is what a stop deadline hands back.
   */
  handle: (d: Delivery, hand: Hand) => Promise<void>;
  log: Logger;
  who: Record<string, string>;
  /** The server's refusal to let this connection pull (pullRefusals): the loop then ends with one line. */
  refused: () => Refusal | undefined;
}

export interface Hand {
  /**
   * Runs `work` with the message counted as held: a stop whose deadline passes while it runs hands
   * the message back (nak) for another to take at once. Outside it (the message's end decided: an
   * ack, a dead letter on its way) a message is never handed back.
   */
  holding<T>(work: () => Promise<T>): Promise<T>;
}

/**
 * Handles up to `concurrency` messages at once, pulling only for free slots: a pull asks for as many
 * messages as there are slots neither busy nor already asked for, so none waits in a client buffer
 * while its ack_wait runs out (a buffered one would be redelivered elsewhere and handled twice). Pulls
 * overlap, so freed slots are refilled at once. One timer tells the server we are alive on every
 * message in hand for a while, so a long handler's ack_wait does not run out. stop() finishes what is
 * in hand (within about a second when idle); past `deadlineMs` what a handler holds is nak'ed.
 */
export function pullIntoSlots(nc: NatsConnection, o: SlotsOptions): Stoppable {
  const { concurrency, log, who } = o;
  let stopping = false;
  // A slot each (slots are reused, so a message in hand costs no map entry), since when, and whether
  // a stop deadline may hand it back (while its holding() runs).
  const inHand: (Delivery | undefined)[] = [];
  const since: number[] = [];
  const held: boolean[] = [];
  const freeSlots: number[] = [];
  const heartbeat = setInterval(() => {
    const before = Date.now() - o.beatEveryMs;
    for (let i = 0; i < inHand.length; i++) if (inHand[i] && since[i]! <= before) inHand[i]!.working();
  }, o.beatEveryMs);
  // Wait until half the slots are free rather than pulling a few at a time: fewer, larger pulls.
  const refill = Math.max(1, Math.floor(concurrency / 2));
  let busy = 0;
  let wake: (() => void) | undefined;
  const changed = () => {
    wake?.();
    wake = undefined;
  };
  // Wakes the loop only when it has something to do (not once per message): enough free slots for a
  // pull, or, when stopping, the last one done.
  const freed = () => {
    if (stopping ? busy === 0 : concurrency - busy - puller.asked >= refill) changed();
  };
  const run = async (m: Delivery) => {
    const slot = freeSlots.pop() ?? inHand.length;
    inHand[slot] = m;
    since[slot] = Date.now();
    const hand: Hand = {
      async holding(work) {
        held[slot] = true;
        try {
          return await work();
        } finally {
          held[slot] = false;
        }
      },
    };
    try {
      if (stopping)
        m.nak(); // arrived as we stopped: straight back
      else await o.handle(m, hand);
    } catch (err) {
      // Only an unexpected client error lands here; the message comes back after ack_wait.
      log.error({ ...who, seq: m.seq, err: String(err) }, "message left for redelivery");
    } finally {
      inHand[slot] = undefined;
      held[slot] = false;
      freeSlots.push(slot);
    }
  };
  const puller = startPulling(nc, {
    stream: o.stream,
    consumer: o.consumer,
    expiresMs: 1_000,
    onJob: (m) => {
      busy++;
      void run(m).finally(() => {
        busy--;
        freed();
      });
    },
    onChange: freed,
    onTick: () => {
      // A user not permitted to pull: the server only says so as a connection status. Stop, with one line.
      const refused = o.refused();
      if (refused && !stopping) {
        stopping = true;
        log.error(who, explain(refused));
        changed();
      }
    },
    onStray: (subject) => log.warn({ ...who, subject }, "a message on the pull inbox that is not a delivery of ours: ignored"),
    onStatus: (code, description) => log.debug({ ...who, code, description }, "pulls ended by the server; pulling again"),
  });
  void nc.closed().then(changed); // a closed connection ends the loop below
  const done = (async () => {
    while (!stopping && !nc.isClosed() && !nc.isDraining()) {
      const free = concurrency - busy - puller.asked;
      if (free < refill) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      puller.ask(free);
    }
    await puller.close();
    while (busy > 0) await new Promise<void>((r) => (wake = r));
    clearInterval(heartbeat);
    if (nc.isClosed()) log.warn(who, "connection closed; stopped");
  })();

  return {
    async stop(deadlineMs = Number.POSITIVE_INFINITY) {
      stopping = true;
      changed();
      if (deadlineMs === Number.POSITIVE_INFINITY) return done;
      const timer = delay(deadlineMs);
      const finished = await Promise.race([done.then(() => true), timer.then(() => false)]);
      timer.cancel();
      if (finished) return;
      // Past the deadline: what is still held (its handler running) goes back now (a nak), for another to take at once
      // rather than after its ack_wait. Its handlers may have done part of the work. Our own pulls end
      // first (they expire within a second): a nak'ed message must not come back to us.
      await puller.close();
      const handedBack = inHand.filter((m, i): m is Delivery => m !== undefined && held[i] === true);
      for (const m of handedBack) m.nak();
      log.warn({ ...who, handed_back: handedBack.length }, "stop deadline passed: the messages in hand went back to the queue");
      clearInterval(heartbeat);
    },
  };
}
