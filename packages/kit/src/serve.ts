// Serving a consumer's messages one at a time until stopped: the loop every subscriber shares (the
// projection, the applier, the runner, the fanout subscribers, the priority-queue's tier workers), with
// one policy for what a handler throws. pull() fetches into a bounded hand it keeps alive, can keep
// each key in order, and sends the plain acks of one turn of the event loop in one write. Workers
// that handle many messages at once (work-queue's) pull for their free slots with startPulling
// (pulling.ts) on the same rules; priority-queue's level workers make no_wait pulls across several
// consumers, their own protocol.
//
// The policy: a handler error never ends the loop. A MalformedPayload can never succeed, so its
// message is ended (term, with the reason on nats-server >= 2.10.4); any other error hands the message
// back (nak) to come again after `retryMs`. Only the loop itself failing (its consumer gone, a refused
// pull) ends it, and `stopped` then says why, for /healthz.
import type { Consumer, ConsumerInfo, ConsumerMessages, FetchMessages, JsMsg, PullOptions as NextOptions } from "@nats-io/jetstream";
import { delay, errors, type NatsConnection } from "@nats-io/transport-node";
import { explain, messageOf, type Refusal, watchRefusals } from "./errors.js";
import type { Logger } from "./log.js";
import { MalformedPayload } from "./payload.js";
import { versionAtLeast } from "./version.js";

/**
 * Watches for the server refusing this connection the right to pull from a consumer. A pull request is
 * a plain publish, so its refusal comes only as a connection status while the pull itself just ends
 * without messages ("heartbeats missed"). A puller asks after a failed pull: `refused()` returns the
 * refusal (to stop with one clear line) or undefined (a passing failure: pull again). stop() ends the
 * watching (a listener on the connection's status) once the puller has stopped.
 */
export async function pullRefusals(nc: NatsConnection, consumer: Consumer): Promise<PullRefusals> {
  return refusalsOf(nc, await consumer.info(true));
}

export interface PullRefusals {
  refused(): Refusal | undefined;
  stop(): void;
}

/** pullRefusals for a consumer whose info the caller has already. */
function refusalsOf(nc: NatsConnection, { stream_name, name }: ConsumerInfo): PullRefusals {
  const refusals = watchRefusals(nc);
  return { refused: () => refusals.get(`$JS.API.CONSUMER.MSG.NEXT.${stream_name}.${name}`), stop: refusals.stop };
}

/**
 * Something you can stop: it stops taking work and finishes what is in hand. Where it takes
 * `deadlineMs`, what is still held then is handed back (nak) to come again at once.
 */
export interface Stoppable {
  stop(deadlineMs?: number): Promise<void>;
}

/** A loop that serves a consumer (pull()): a Stoppable that can also stop by itself, and says why. */
export interface Serving extends Stoppable {
  /**
   * Stops pulling and waits for the message being handled and for the pull under way to end (pull():
   * its expiry, or twice it and a second at most; at once while the connection is down); the rest of
   * the hand, and what that pull still brings, goes back (nak) to come again once that pull has ended
   * (after expiresMs). Every ack given is sent by then: stop before closing the connection (see
   * sentTogether). While the connection is down, acks and naks only wait in nats.js's buffer, which it
   * drops when it connects again: those messages come again after their ack_wait.
   */
  stop(): Promise<void>;
  /** Why the loop ended by itself (undefined while it runs, or after stop()): /healthz answers 503 with it. */
  readonly stopped: string | undefined;
}

export interface ServeOptions {
  nc: NatsConnection;
  log: Logger;
  who: Record<string, string>;
  /** A message whose handler threw (not MalformedPayload) comes back after this (default 1000 ms). */
  retryMs?: number;
}

/**
 * Ends a message for good, with `reason` (cut to 200 characters) where the server understands one:
 * "+TERM <reason>" from nats-server 2.10.4; older servers want a bare +TERM.
 */
export function terminate(m: { term(reason?: string): void }, reason: string, serverVersion: string | undefined): void {
  if (versionAtLeast(serverVersion, "2.10.4")) m.term(reason.slice(0, 200));
  else m.term();
}

/** A promise to wait on that wake() resolves; a wake() with no one waiting is kept for the next wait(). */
function wakeable() {
  let woken = false;
  let resolve: (() => void) | undefined;
  return {
    wait(): Promise<void> {
      if (woken) {
        woken = false;
        return Promise.resolve();
      }
      return new Promise<void>((r) => {
        resolve = r;
      });
    },
    wake() {
      if (resolve) {
        const r = resolve;
        resolve = undefined;
        r();
      } else woken = true;
    },
  };
}

/**
 * Sends an answer (nak, term) unless the connection is closed (the message then comes back after its
 * ack_wait); one sent while it drains still goes out with drain's last flush. Never throws, so a loop
 * that answers while its connection closes still ends.
 */
function answer(nc: NatsConnection, send: () => void): void {
  if (nc.isClosed()) return;
  try {
    send();
  } catch {
    // closed since: the same
  }
}

/**
 * Answers sent together. nats.js writes to the socket once per turn of the microtask queue, so a loop
 * that awaits one handler after another sends each ack in a write of its own: with handlers that ack
 * and return, those writes were most of the loop's cost, and of the server's (packages/bench: the
 * fanout's rate about doubled). `later(send)` keeps an answer until the end of this turn of the event
 * loop (setImmediate), until 64 are kept, or until flush(), and then sends them in one write. A
 * process that dies before then has lost those answers, as it can lose any on the wire, and so has a
 * connection closed in the same turn (stop the loop first: its stop() sends them): for an ack, the
 * message comes again after its ack_wait.
 */
export function sentTogether(nc: NatsConnection): { later(send: () => void): void; flush(): void } {
  const due: (() => void)[] = [];
  const flush = () => {
    for (const send of due.splice(0)) answer(nc, send);
  };
  return {
    later(send) {
      const kept = due.push(send);
      if (kept === 1) setImmediate(flush);
      else if (kept >= 64) flush(); // handlers that never wait for I/O: their acks do not wait for the whole hand
    },
    flush,
  };
}

/**
 * A message whose plain ack() is sent later (sentTogether). Until it is sent, its other answers (nak,
 * term, working) are not, and ackAck() answers false: the first answer counts, as nats.js's own.
 */
class AckedLater implements JsMsg {
  /** ack() was called: the message is done, whatever its handler does after. */
  acked = false;
  constructor(
    private readonly m: JsMsg,
    private readonly acks: ReturnType<typeof sentTogether>,
  ) {}
  get redelivered() {
    return this.m.redelivered;
  }
  get info() {
    return this.m.info;
  }
  get seq() {
    return this.m.seq;
  }
  get headers() {
    return this.m.headers;
  }
  get data() {
    return this.m.data;
  }
  get subject() {
    return this.m.subject;
  }
  get sid() {
    return this.m.sid;
  }
  get time() {
    return this.m.time;
  }
  get timestamp() {
    return this.m.timestamp;
  }
  get timestampNanos() {
    return this.m.timestampNanos;
  }
  ack() {
    if (!this.acked) this.acks.later(() => this.m.ack());
    this.acked = true;
  }
  nak(millis?: number) {
    if (!this.acked) this.m.nak(millis);
  }
  working() {
    if (!this.acked) this.m.working();
  }
  next(subj: string, opts?: Partial<NextOptions>) {
    if (!this.acked) this.m.next(subj, opts);
  }
  term(reason?: string) {
    if (!this.acked) this.m.term(reason);
  }
  ackAck(opts?: Partial<{ timeout: number }>): Promise<boolean> {
    return this.acked ? Promise.resolve(false) : this.m.ackAck(opts);
  }
  json<T>(): T {
    return this.m.json<T>();
  }
  string() {
    return this.m.string();
  }
}

/** The policy above, for one message whose handler threw `err`. */
function settle(m: JsMsg, err: unknown, o: ServeOptions, retryMs: number): void {
  if (o.nc.isClosed()) return; // gone: the message comes back after its ack_wait
  if (err instanceof MalformedPayload) {
    const reason = `malformed: ${err.message}`.slice(0, 200);
    answer(o.nc, () => terminate(m, reason, o.nc.info?.version));
    o.log.warn({ ...o.who, seq: m.seq, reason }, "malformed message: terminated, not retried");
    return;
  }
  answer(o.nc, () => m.nak(retryMs));
  o.log.warn(
    { ...o.who, seq: m.seq, delivery: m.info.deliveryCount, err: messageOf(err), retry_ms: retryMs },
    "not handled; it comes back",
  );
}

export interface PullOptions extends ServeOptions {
  /** Messages in hand at most: fetched and not yet settled (default 8). */
  batch?: number;
  /** How long each pull waits for messages (default 2000 ms). */
  expiresMs?: number;
  /**
   * Where order per key matters: the key of a message (an account, an order id). A message whose
   * handler failed holds its key: every later message of that key that this loop gets is handed back
   * (nak, the same delay) and joins the hold, and the key's messages are then handled only lowest
   * sequence first, until every one the hold took is handled. A hold lapses ack_wait plus twice the
   * delay after the last failure of one of its messages (the failed one may have gone to another
   * instance, or ended: an ack that landed but whose answer was lost). Held
   * messages stay ack-pending: many held keys can fill the consumer's max_ack_pending, and each nak
   * is a delivery (keep max_deliver unlimited with keyOf). A malformed message holds nothing.
   */
  keyOf?: (m: JsMsg) => string | undefined;
  /** More options for each pull: a priority group's (group, priority, min_pending; nats-server 2.11+). */
  pullWith?: Record<string, unknown>;
}

/**
 * Fetches messages into a hand of at most `batch` and hands each to `handle`, lowest stream sequence
 * in hand first (so a message handed out again goes before later ones still waiting), with the
 * policy above, until stop(). Every message in hand, handled or waiting its turn, is kept alive
 * (working(), every third of the consumer's ack_wait), so none runs out its ack_wait in the hand and
 * runs twice. A failed pull (a restart, missed heartbeats) is followed by a new one; a refused one ends
 * the loop with one line.
 */
function lowest(seqs: Set<number>): number {
  let low = Number.POSITIVE_INFINITY;
  for (const s of seqs) if (s < low) low = s;
  return low;
}

export async function pull(consumer: Consumer, handle: (m: JsMsg) => Promise<void>, o: PullOptions): Promise<Serving> {
  let stopping = false;
  let stopped: string | undefined;
  const info = await consumer.info(true);
  const refusals = refusalsOf(o.nc, info);
  const ackWaitMs = (info.config.ack_wait ?? 30_000_000_000) / 1_000_000;
  const batch = o.batch ?? 8;
  const retryMs = o.retryMs ?? 1_000;
  const expiresMs = o.expiresMs ?? 2_000;
  // Waiting their turn, lowest stream sequence first: a message handed out again (its ack_wait ran
  // out at another instance, or a nak's delay ended) goes before the later ones that came before it.
  const hand: AckedLater[] = [];
  let current: AckedLater | undefined; // the one being handled
  const acks = sentTogether(o.nc);
  const take = (m: AckedLater) => {
    let at = hand.length;
    while (at > 0 && hand[at - 1]!.seq > m.seq) at--;
    hand.splice(at, 0, m);
  };
  // Keys held by a failed message: the sequences the hold took (to be handled lowest first), and
  // when it lapses if nothing happens on it.
  let fetching: ConsumerMessages | undefined;
  const held = new Map<string, { seqs: Set<number>; until: number }>();
  const lapse = () => Date.now() + ackWaitMs + 2 * retryMs;
  // A handler that never returns keeps its message (and the hand behind it) alive for ever: give the
  // calls it makes their own timeouts.
  const heartbeat = setInterval(
    () => {
      if (o.nc.isClosed() || o.nc.isDraining()) return;
      current?.working();
      for (const m of hand) m.working();
      const now = Date.now();
      for (const [key, hold] of held) if (now > hold.until) held.delete(key);
    },
    Math.max(100, ackWaitMs / 3),
  );
  const one = async (m: AckedLater) => {
    let key: string | undefined;
    try {
      key = o.keyOf?.(m);
    } catch {
      key = undefined; // a key that cannot be read holds nothing
    }
    let hold = key === undefined ? undefined : held.get(key);
    if (hold && Date.now() > hold.until) {
      held.delete(key!);
      hold = undefined;
    }
    if (hold && m.seq > lowest(hold.seqs)) {
      // Joining it does not keep the hold alive: held messages come back every retryMs, and a hold
      // whose lowest message went elsewhere would never lapse.
      hold.seqs.add(m.seq);
      answer(o.nc, () => m.nak(retryMs)); // behind an earlier message of its key
      o.log.debug({ ...o.who, seq: m.seq, key }, "held behind an earlier message of its key");
      return;
    }
    // Handled or ended for good: out of its key's hold, and the hold over once it took nothing more.
    const release = () => {
      hold?.seqs.delete(m.seq);
      if (hold?.seqs.size === 0) held.delete(key!);
    };
    try {
      await handle(m);
      release();
    } catch (err) {
      // While stopping, not before the pull under way has ended (see handBack).
      settle(m, err, o, stopping ? Math.max(retryMs, expiresMs) : retryMs);
      // Acked before it threw (say, in what it did after the ack): done, so it holds nothing.
      if (key === undefined || err instanceof MalformedPayload || m.acked) return release();
      if (hold) {
        hold.seqs.add(m.seq);
        hold.until = lapse();
      } else held.set(key, { seqs: new Set([m.seq]), until: lapse() });
    }
  };
  // While the connection is down a pull cannot end (no expiry comes back, no heartbeat is missed), and
  // when it comes back nats.js pulls again with a fresh expiry: a loop that is stopping would take new
  // messages through that pull only to hand them back, a delivery spent on each. So a stopping loop
  // closes its pull once the connection is down: what the server sent it before is lost with the
  // connection already (it comes again after its ack_wait), and nothing can come to it until then.
  // Up when the loop starts: its consumer's info just came back. Back up at "reconnect", a round trip
  // before nats.js pulls again (it asks for the consumer's info first): a stop() in that moment can
  // still take what that pull brings, and hands it back.
  let down = false;
  const statuses = o.nc.status();
  void (async () => {
    for await (const s of statuses) {
      if (s.type === "disconnect") {
        down = true;
        if (stopping) void fetching?.close();
      } else if (s.type === "reconnect") down = false;
    }
  })().catch(() => {}); // ends with the connection: nothing to report
  // Two loops: one fetches into the hand whenever half of it is free (so the next messages are on
  // their way while the hand is worked off), the other handles the hand, one message at a time.
  const fetched = wakeable();
  const freed = wakeable();
  let fetcherDone = false;
  const fetcher = (async () => {
    while (!stopping && !o.nc.isClosed()) {
      const room = batch - hand.length - (current ? 1 : 0);
      if (room < Math.ceil(batch / 2)) {
        await freed.wait();
        continue;
      }
      try {
        fetching = await consumer.fetch({ ...o.pullWith, max_messages: room, expires: expiresMs } as FetchMessages);
        // stop() came while this pull was being made, with the connection down: it closed the one
        // before. Closed now, and still read below (a closed fetch ends once its iterator is read).
        if (stopping && down) void fetching.close();
        for await (const m of fetching) {
          take(new AckedLater(m, acks));
          fetched.wake();
        }
      } catch (err) {
        if (o.nc.isClosed() || stopping) break;
        if (err instanceof errors.InvalidArgumentError) {
          // Our own options are wrong (an expiry under 1 s, ...): another pull cannot help.
          stopped = `cannot pull: ${err.message}`;
          o.log.error({ ...o.who }, stopped);
          break;
        }
        const refused = refusals.refused();
        if (refused) {
          stopped = explain(refused);
          o.log.error({ ...o.who }, stopped);
          break;
        }
        o.log.debug({ ...o.who, err: String(err) }, "pull failed; pulling again");
        await delay(250);
      }
    }
    fetcherDone = true;
    fetched.wake();
  })();
  // Stopping: what is in hand and not started goes back, for another instance, to come again once the
  // pull still under way has ended (its expiry at most): coming again at once, it could come straight
  // back to that pull, be handed back again, and spend its max_deliver on the way out.
  const handBack = () => {
    for (const m of hand.splice(0)) answer(o.nc, () => m.nak(expiresMs));
  };
  const loop = (async () => {
    try {
      for (;;) {
        if (stopping) handBack();
        current = hand.shift();
        if (current) {
          await one(current);
          current = undefined;
          if (batch - hand.length >= Math.ceil(batch / 2)) freed.wake();
          continue;
        }
        if (fetcherDone) break;
        await fetched.wait();
      }
      await fetcher;
    } finally {
      clearInterval(heartbeat);
      acks.flush();
      refusals.stop();
      (statuses as { stop?: () => void }).stop?.();
    }
  })();
  return {
    get stopped() {
      return stopped;
    },
    async stop() {
      stopping = true;
      handBack(); // now, not after the message being handled
      // The pull under way is left to end by itself (at its expiry, expiresMs at most): closing it
      // would unsubscribe while the server may still be sending to it, and what it sent then would
      // stay ack-pending for ack_wait. What it brings goes back, as does the rest of the hand (handBack).
      // One that is down (see `down`) is closed now; a pull that does not end for another reason is
      // closed after twice its expiry and a second, as pulling.ts forgets a silent pull.
      freed.wake();
      if (down) await fetching?.close();
      const waited = await Promise.race([loop.then(() => true), delay(2 * expiresMs + 1_000).then(() => false)]);
      if (!waited) await fetching?.close();
      await loop;
    },
  };
}
