// A fast JetStream publisher: many publishes in flight, their acks all coming back on one reply
// inbox and matched by a token at the end of the reply subject. `await js.publish()` makes a request
// per message; this does what a request does (publish with a reply subject) without the per-request
// bookkeeping, and keeps the guarantees: every message gets its own ack or its own error, a timed-out
// publish is resent with the same Nats-Msg-Id (stored once), and when `window` publishes are in
// flight, publish() waits for a free slot (back-pressure). A 429 from the server (the stream's ingest
// queue was full, nats-server >= 2.11) halves the window, which grows back with each stored message,
// and the refused message goes again: the stream's own back-pressure, not an error.
import { PubHeaders } from "@nats-io/jetstream";
import { headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { inboxFor } from "./connect.js";
import { ApiCodes, explain, watchRefusals } from "./errors.js";

export interface OutgoingMessage {
  subject: string;
  data: Uint8Array;
  /** Nats-Msg-Id. With an id a timed-out publish is resent (the stream stores it once); without one it is not. */
  id?: string;
  headers?: MsgHdrs;
}

/** What happened to one message. */
export interface PublishResult {
  id?: string;
  /**
   * The stream sequence it was stored at (0 on error). For a duplicate, the sequence of the copy
   * stored before, or 0 when that copy was still being stored (nats-server 2.10 in a cluster).
   */
  seq: number;
  /** The server had this msg id already: nothing new was stored. */
  duplicate: boolean;
  attempts: number;
  /** Why it was not stored: the server's error, or out of attempts. */
  error?: string;
  /** With `error`: the server's JetStream err_code (nats-server's errors.json, e.g. 10060), or 503 for no responders. */
  code?: number;
}

export interface PublisherOptions {
  /** The stream every message must land in (Nats-Expected-Stream); a publish to another stream fails. */
  stream?: string;
  /** Publishes in flight at most (default 1024). */
  window?: number;
  /** Wait this long for an ack before resending (default 2000 ms), twice as long after each resend (up to 5 s). */
  timeoutMs?: number;
  /** Sends per message, the first included (default 5). */
  attempts?: number;
}

/** What happened to a batch of messages, counted. */
export interface Tally {
  stored: number;
  duplicates: number;
  /** Needed more than one send. */
  retried: number;
  failed: number;
}

export interface Publisher {
  /** Resolves when the message is acked or has failed for good; never rejects. Waits first, in call order, when the window is full. */
  publish(msg: OutgoingMessage): Promise<PublishResult>;
  /**
   * Publishes all (any iterable: a generator of a million is never all in memory), keeping the window
   * full; each result goes to `onResult` with its index. Resolves when every one has its result.
   */
  publishAll(msgs: Iterable<OutgoingMessage>, onResult?: (r: PublishResult, index: number) => void): Promise<Tally>;
  /** Resolves when every publish() so far has its result (those that waited for a slot too), and nothing is in flight. */
  flush(): Promise<void>;
  /** Stops: publishes still waiting for an ack resolve with an error. */
  close(): void;
}

interface InFlight {
  msg: OutgoingMessage;
  /** The reply subject: the inbox and this record's token. */
  reply: string;
  attempts: number;
  /** When to act if no answer came: resend or give up. */
  due: number;
  /** The last answer said nothing was stored (no responders, 503): resending cannot store twice. */
  unstored?: string;
  /** Sends answered 429 (the stream's ingest queue full): back pressure, not counted against `attempts`. */
  busy: number;
  index: number;
  done: Done;
}

/** How a publish ended. Plain numbers, not an object per message: the publisher's hot path makes no garbage. */
const Stored = 0;
const Duplicate = 1;
const Failed = 2;
type Ending = typeof Stored | typeof Duplicate | typeof Failed;

type Done = (f: InFlight, seq: number, ending: Ending, error?: string, code?: number) => void;

const result = (f: InFlight, seq: number, ending: Ending, error?: string, code?: number): PublishResult => ({
  id: f.msg.id,
  seq,
  duplicate: ending === Duplicate,
  attempts: f.attempts,
  error,
  code,
});

// The bytes that begin and end the common ack, {"stream":"S","seq":N} (or with a "domain" between).
const STREAM = new TextEncoder().encode('{"stream":');
const SEQ = new TextEncoder().encode('"seq":');
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const CLOSE_BRACE = 0x7d;

/**
 * N from the common ack, `{"stream":…"seq":N}` with N > 0, read backwards from its end: no copy, no
 * parse. -1 for any other answer: JSON.parse reads those. An error answer ends `"seq":0}` just the
 * same (`{"error":{…},"stream":"S","seq":0}`), so it is told apart twice: it begins with "error",
 * and no stream stores at sequence 0.
 */
export function seqAtEnd(b: Uint8Array): number {
  for (let k = 0; k < STREAM.length; k++) if (b[k] !== STREAM[k]) return -1;
  let i = b.length - 1;
  if (b[i] !== CLOSE_BRACE) return -1;
  let seq = 0;
  let unit = 1;
  for (i--; i >= 0 && b[i]! >= DIGIT_0 && b[i]! <= DIGIT_9; i--, unit *= 10) seq += (b[i]! - DIGIT_0) * unit;
  if (unit === 1) return -1;
  for (let k = SEQ.length - 1; k >= 0; k--, i--) if (b[i] !== SEQ[k]) return -1;
  return seq > 0 ? seq : -1;
}

type Ack = { seq?: number; duplicate?: boolean; error?: { code?: number; err_code?: number; description?: string } };

/** Sends answered 429 a message may have before it fails (each waits 2 s at most, longer when many are refused). */
const MAX_BUSY = 50;

export function createPublisher(nc: NatsConnection, opts: PublisherOptions = {}): Publisher {
  const window = opts.window ?? 1024;
  const timeoutMs = opts.timeoutMs ?? 2_000;
  const maxAttempts = opts.attempts ?? 5;
  const inbox = inboxFor(nc);
  const inFlight = new Map<number, InFlight>();
  // publish() calls waiting for a slot, in call order; publishAll waits in `waiting` instead (it holds
  // one message at a time, and takes the next from its iterable only once that one has started).
  const queued: { msg: OutgoingMessage; done: Done }[] = [];
  let pumping = false;
  const waiting: (() => void)[] = [];
  const idle: (() => void)[] = [];
  const slot = () => new Promise<void>((r) => waiting.push(r));
  const text = new TextDecoder();
  // Reply subjects are reused: a token goes back to `free` once the one answer its single send could
  // get has come. So the server sees about `window` distinct reply subjects, not a new one per message
  // (each new subject costs it a full match and a cache insert). Its caches are smaller than the
  // default window (512 subjects per connection, 1,024 per account), so some matches still miss: part
  // of the gap to a raw ingest whose replies all go to one subject (packages/bench). A token
  // that was sent twice, timed out or was given up on is never reused: a late answer must find nothing.
  const free: number[] = [];
  // The record of a reusable token is reused too, its reply subject with it: records live long, so
  // recycling them spares the garbage collector (a new one per message, kept until its ack, was most of
  // the publisher's cost). Tokens past 4 × window (after many give-ups) get a record each time.
  const records: InFlight[] = [];
  let tokens = 0;
  let closed = false;
  // Publishes allowed in flight now: `window`, halved by a 429 (the stream's ingest queue was full,
  // at most once per 50 ms) and grown back by one with each stored message.
  let limit = window;
  let halvedAt = 0;

  const send = (t: number, f: InFlight) => {
    f.attempts++;
    f.due = Date.now() + Math.min(timeoutMs * 2 ** (f.attempts - 1), Math.max(timeoutMs, 5_000));
    f.unstored = undefined;
    try {
      nc.publish(f.msg.subject, f.msg.data, { reply: f.reply, headers: headersFor(f.msg) });
    } catch (err) {
      fail(t, err instanceof Error ? err.message : String(err)); // e.g. connection closed
    }
  };
  const finish = (t: number, seq: number, ending: Ending, error?: string, code?: number) => {
    const f = inFlight.get(t);
    if (!f) return; // a late ack of a resent message: the first answer won
    inFlight.delete(t);
    f.done(f, seq, ending, error, code);
    if (queued.length > 0) pump(); // before the idle check: a queued publish starts now, in this step
    waiting.shift()?.();
    if (inFlight.size === 0 && queued.length === 0) for (const w of idle.splice(0)) w();
  };
  // Starts queued publishes while there is room (the limit may have grown since the last): called at
  // every finish, so none waits for a wake it missed. A send that fails at once finishes inside the
  // loop, which must not start a second loop.
  const pump = () => {
    if (pumping) return;
    pumping = true;
    try {
      while (queued.length > 0 && (inFlight.size < limit || closed)) {
        const q = queued.shift()!;
        start(q.msg, q.done);
      }
    } finally {
      pumping = false;
    }
  };
  const fail = (t: number, why: string, code?: number) => finish(t, 0, Failed, why, code);
  // The server answered: a token sent once can be reused now that its one answer has come.
  const answered = (t: number, f: InFlight, seq: number, ending: Ending, error?: string, code?: number) => {
    if (f.attempts === 1) free.push(t);
    if (ending !== Failed && limit < window) limit++;
    finish(t, seq, ending, error, code);
  };
  // Nothing was stored: try again after a pause (a new stream's leader may be a moment away, a full
  // discard-new stream may have room once its consumers ack).
  const later = (t: number, f: InFlight, why: string, code: number) => {
    if (f.attempts - f.busy >= maxAttempts || f.busy > MAX_BUSY) return fail(t, why, code);
    f.unstored = why;
    f.due = Date.now() + Math.min(100 * 2 ** (Math.min(f.attempts, 6) - 1), 2_000);
  };
  const overloaded = () => {
    const now = Date.now();
    if (now - halvedAt < 50) return;
    halvedAt = now;
    limit = Math.max(1, Math.floor(limit / 2));
  };
  const onAck = (m: Msg) => {
    const t = Number(m.subject.slice(inbox.length + 1));
    const f = inFlight.get(t);
    if (!f) return;
    // 503 status, no body: no stream listens on the subject (or none has a leader yet). Nothing was stored.
    if (m.headers?.code === 503) return later(t, f, `no stream answered on ${f.msg.subject} (no responders): is the stream created?`, 503);
    const seq = seqAtEnd(m.data);
    if (seq >= 0) return answered(t, f, seq, Stored);
    const body = text.decode(m.data);
    let ack: Ack;
    try {
      ack = JSON.parse(body) as Ack;
    } catch {
      return answered(t, f, 0, Failed, `unreadable ack: ${body.slice(0, 80)}`);
    }
    if (ack.error) {
      const why = ack.error.description ?? `error ${ack.error.code}`;
      const code = ack.error.err_code ?? ack.error.code;
      // A 503 from JetStream (no leader for a moment, a full stream, insufficient resources) stored
      // nothing, and neither did a msg id already in process, nor a 429 (the stream's ingest queue was
      // full, nats-server >= 2.11, and the message dropped): each is worth another try.
      if (ack.error.code === 429) {
        f.busy++;
        overloaded();
      }
      if (ack.error.code === 503 || ack.error.code === 429 || code === ApiCodes.DuplicateInProcess) return later(t, f, why, code ?? 503);
      return answered(t, f, 0, Failed, why, code);
    }
    // A duplicate may come with seq 0: nats-server 2.10 in a cluster answers so for a copy that
    // arrives while the first is being stored (its msg id staged with seq 0, jetstream_cluster.go).
    if (ack.duplicate === true) return answered(t, f, ack.seq ?? 0, Duplicate);
    // Anything else that is not a stored message (no sequence) is an error too, never "stored".
    if (!ack.seq) return answered(t, f, 0, Failed, `ack without a sequence: ${body.slice(0, 80)}`);
    answered(t, f, ack.seq, Stored);
  };
  const sub: Subscription = nc.subscribe(`${inbox}.*`, { callback: (err, m) => (err ? undefined : onAck(m)) });
  // A publish this user may not make is refused in a connection status, not in an answer: the
  // messages to that subject fail at the next sweep with the line that says so (no resends, no wait).
  const refusals = watchRefusals(nc);

  // Acts on what is due: resend if that cannot store twice (nothing stored, or a msg id), else give up.
  const sweep = setInterval(
    () => {
      const now = Date.now();
      // Messages refused for a passing reason go again at most `limit` per sweep: after a 429 the
      // whole window would otherwise come back at once and overflow the ingest queue again.
      let budget = limit;
      for (const [t, f] of inFlight) {
        const refused = refusals.get(f.msg.subject);
        if (refused) fail(t, explain(refused));
        if (refused || now < f.due) continue;
        if (f.unstored && budget-- <= 0) continue;
        if (f.unstored || (f.msg.id && f.attempts - f.busy < maxAttempts)) send(t, f);
        else
          fail(
            t,
            f.msg.id
              ? `no ack after ${f.attempts} attempts (first timeout ${timeoutMs}ms)`
              : `no ack within ${timeoutMs}ms; without a msg id it is not resent (it may be stored)`,
          );
      }
    },
    Math.max(1, Math.min(100, timeoutMs)),
  );

  const flush = () => (inFlight.size === 0 && queued.length === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r)));
  // Built at each send rather than kept: a message waiting for its ack holds as little as possible.
  const headersFor = (msg: OutgoingMessage): MsgHdrs | undefined => {
    if (!msg.id && !opts.stream) return msg.headers;
    const hdrs = msg.headers ?? headers();
    if (msg.id) hdrs.set(PubHeaders.MsgIdHdr, msg.id);
    if (opts.stream) hdrs.set(PubHeaders.ExpectedStreamHdr, opts.stream);
    return hdrs;
  };
  const start = (msg: OutgoingMessage, done: Done, index = 0) => {
    if (closed) return done({ msg, reply: "", attempts: 0, busy: 0, due: 0, index, done }, 0, Failed, "publisher closed");
    const t = free.pop() ?? ++tokens;
    let f = records[t];
    if (f) {
      f.msg = msg;
      f.attempts = 0;
      f.busy = 0;
      f.unstored = undefined;
      f.index = index;
      f.done = done;
    } else {
      f = { msg, reply: `${inbox}.${t}`, attempts: 0, busy: 0, due: 0, index, done };
      if (t <= 4 * window) records[t] = f;
    }
    inFlight.set(t, f);
    send(t, f);
  };
  // Starts now if there is room and nobody is queued before it, else queues (pump() starts it): the
  // check and the start are one step, so publishes called together never pass the window.
  const publish = (msg: OutgoingMessage): Promise<PublishResult> =>
    new Promise<PublishResult>((resolve) => {
      const done: Done = (f, seq, ending, error, code) => resolve(result(f, seq, ending, error, code));
      if (queued.length === 0 && (inFlight.size < limit || closed)) start(msg, done);
      else queued.push({ msg, done });
    });

  return {
    publish,
    async publishAll(msgs, onResult) {
      const tally: Tally = { stored: 0, duplicates: 0, retried: 0, failed: 0 };
      // Counted without an object per message; one is made only for onResult.
      const count: Done = (f, seq, ending, error, code) => {
        if (ending === Failed) tally.failed++;
        else if (ending === Duplicate) tally.duplicates++;
        else tally.stored++;
        if (f.attempts > 1) tally.retried++;
        onResult?.(result(f, seq, ending, error, code), f.index);
      };
      let i = 0;
      for (const m of msgs) {
        // Only wait when the window is full: publishes made in one go leave in one socket write.
        while (inFlight.size >= limit && !closed) await slot();
        start(m, count, i++); // a callback, not a promise and a closure per message: less garbage
      }
      await flush();
      return tally;
    },
    flush,
    close() {
      closed = true;
      clearInterval(sweep);
      sub.unsubscribe();
      refusals.stop();
      for (const t of [...inFlight.keys()]) fail(t, "publisher closed before the ack");
      pump(); // what is queued ends as "publisher closed"
      for (const w of waiting.splice(0)) w();
    },
  };
}

/**
 * One batch through its own publisher: publishes all, closes it, and rejects (once the rest are
 * through) if any message could not be stored, saying how many `what` and the first reason.
 */
export async function publishBatch(
  nc: NatsConnection,
  msgs: Iterable<OutgoingMessage>,
  opts: PublisherOptions & { what: string },
  onResult?: (r: PublishResult, index: number) => void,
): Promise<Tally> {
  const publisher = createPublisher(nc, opts);
  let firstError = "";
  try {
    const tally = await publisher.publishAll(msgs, (r, i) => {
      if (r.error) firstError ||= r.id ? `${r.id}: ${r.error}` : r.error;
      onResult?.(r, i);
    });
    if (tally.failed > 0) throw new Error(`${tally.failed} ${opts.what} not published, e.g. ${firstError}`);
    return tally;
  } finally {
    publisher.close();
  }
}
