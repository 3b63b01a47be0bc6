// A worker: pulls jobs from the shared durable consumer and competes with the other workers for them.
// Success -> ack (confirmed by the server). Failure -> nak with the backoff delay, or on the last
// delivery -> DLQ. Malformed payload -> DLQ at once (retrying cannot fix it).
import { jetstream } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { explain, jsonObject, type Logger, MalformedPayload, pullRefusals, versionAtLeast } from "@repo/kit";
import { deadLetter } from "./dead-letter.js";
import { type Delivery, startPulling } from "./pull.js";
import { ackWaits, CONSUMER, defaultRetry, type RetryPolicy, STREAM } from "./setup.js";
import { advance, isFinal, type StatusStore } from "./status.js";

export interface Job {
  id: string;
  task: string;
  input?: unknown;
}

/** A job from its payload, checked: a malformed one (MalformedPayload) goes to the DLQ at once. */
export function parseJob(data: Uint8Array): Job {
  const job = jsonObject(data);
  if (typeof job.id !== "string" || typeof job.task !== "string") throw new MalformedPayload('expected {"id": string, "task": string}');
  return { id: job.id, task: job.task, input: job.input };
}

export interface JobContext {
  seq: number;
  subject: string;
  /** 1 on the first delivery. */
  delivery: number;
  worker: string;
  /**
   * Reports how far along the job is (0..1): tells the server the job is still being worked on (its
   * ack_wait starts again) and, with a status store, records the progress for waitForResult's watchers.
   */
  progress(fraction: number): Promise<void>;
}

/** Handles a job; what it returns (JSON) is the job's result in the status store, if there is one. */
export type Handler = (job: Job, ctx: JobContext) => Promise<unknown>;

export type Outcome =
  | { kind: "processed"; job: Job; ctx: JobContext /** With confirmAcks: whether the server confirmed the ack. */; acked?: boolean }
  | { kind: "retry"; job: Job; ctx: JobContext; reason: string; delayMs: number }
  | { kind: "dead_lettered"; job?: Job; ctx: JobContext; reason: string };

export interface WorkerOptions {
  nc: NatsConnection;
  name: string;
  handler: Handler;
  log: Logger;
  retry?: RetryPolicy;
  /** Jobs handled at once by this worker (default 1). */
  concurrency?: number;
  /**
   * Wait for the server to confirm each ack (ackAck), so the outcome says whether it landed. Either
   * way an ack that is lost means the job comes back; confirming costs a round trip per job (about
   * half the throughput in `pnpm bench`). Default false.
   */
  confirmAcks?: boolean;
  onOutcome?: (outcome: Outcome) => void;
  /** Record each job's status, progress and result (src/status.ts). */
  status?: StatusStore;
}

/**
 * A job's context as its handler sees it. A class rather than an object of closures: a job in hand
 * costs one object, and the subject and sequence are read from the message only if asked for.
 */
class Context implements JobContext {
  readonly delivery: number;
  job?: Job;
  constructor(
    readonly m: Delivery,
    readonly worker: string,
    private readonly status: StatusStore | undefined,
  ) {
    this.delivery = m.deliveryCount;
  }
  get seq() {
    return this.m.seq;
  }
  get subject() {
    return this.m.subject;
  }
  running(progress?: number) {
    return { state: "running" as const, at: Date.now(), worker: this.worker, delivery: this.delivery, progress };
  }
  async progress(fraction: number) {
    this.m.working();
    if (this.status && this.job) await advance(this.status, this.job.id, this.running(fraction));
  }
}

export interface Worker {
  name: string;
  /**
   * Stops pulling and finishes the jobs in hand (within about a second when idle). After `deadlineMs`
   * (default: no deadline) the jobs still in hand are nak'ed, so they go straight back to the queue.
   */
  stop(deadlineMs?: number): Promise<void>;
}

export async function startWorker(opts: WorkerOptions): Promise<Worker> {
  const { nc, name, handler, log } = opts;
  const retry = opts.retry ?? defaultRetry;
  const js = jetstream(nc);
  const consumer = await js.consumers.get(STREAM, CONSUMER);
  const refusals = await pullRefusals(nc, consumer);
  // "+TERM <reason>" is understood from 2.10.4; older servers want a bare +TERM.
  const termWithReason = versionAtLeast(nc.info?.version, "2.10.4");
  const backoff = (delivery: number) => retry.backoffMs[Math.min(delivery, retry.backoffMs.length) - 1] ?? 1_000;
  let stopping = false;
  // Jobs being handled, and since when: a slot each (slots are reused, so a job costs no map entry).
  // One timer tells the server we are alive on every job in hand for a while, so a long job's
  // ack_wait does not run out and hand it to another worker.
  const inHand: (Delivery | undefined)[] = [];
  const since: number[] = [];
  const freeSlots: number[] = [];
  const beatEvery = Math.max(100, Math.min(...ackWaits(retry)) / 3);
  const heartbeat = setInterval(() => {
    const before = Date.now() - beatEvery;
    for (let i = 0; i < inHand.length; i++) if (inHand[i] && since[i]! <= before) inHand[i]!.working();
  }, beatEvery);

  const toDlq = async (ctx: Context, reason: string) => {
    const { m, job } = ctx;
    try {
      await deadLetter(js, {
        subject: m.subject,
        seq: m.seq,
        deliveries: ctx.delivery,
        reason,
        by: name,
        data: m.data,
        headers: m.headers,
      });
    } catch (err) {
      // Not in the DLQ yet: keep the job. If this was its last delivery the dlq-mover takes it.
      log.error({ seq: m.seq, err: String(err) }, "could not dead-letter; job kept for redelivery");
      m.nak(backoff(ctx.delivery));
      return;
    }
    if (opts.status && job)
      await advance(opts.status, job.id, { state: "dead_lettered", at: Date.now(), reason }).catch((err: unknown) =>
        log.warn({ id: job.id, err: String(err) }, "dead-lettered, but its status could not be recorded"),
      );
    if (termWithReason) m.term(reason.slice(0, 200));
    else m.term();
    log.warn({ worker: name, seq: m.seq, id: job?.id, reason }, "dead-lettered");
    opts.onOutcome?.({ kind: "dead_lettered", job, ctx, reason });
  };

  const handle = async (m: Delivery) => {
    let job: Job;
    const ctx = new Context(m, name, opts.status);
    if (ctx.delivery > retry.maxDeliver) {
      // A grace delivery: the handler had its tries and the last one never answered (the worker died,
      // hung, or could not reach the DLQ). Do not run it again: dead-letter it.
      try {
        ctx.job = parseJob(m.data);
      } catch {
        // malformed as well: the reason below still says what happened
      }
      return toDlq(ctx, `no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`);
    }
    try {
      job = parseJob(m.data);
    } catch (err) {
      return toDlq(ctx, `malformed payload: ${(err as Error).message}`);
    }
    ctx.job = job;
    const slot = freeSlots.pop() ?? inHand.length;
    inHand[slot] = m;
    since[slot] = Date.now();
    try {
      if (opts.status && isFinal(await advance(opts.status, job.id, ctx.running()))) {
        // It ended already and this is a redelivery (its ack was lost): do not run it again.
        log.info({ worker: name, id: job.id, delivery: ctx.delivery }, "already ended (status store): acked without running it again");
        m.ack();
        return;
      }
      const result = await handler(job, ctx);
      if (opts.status) await advance(opts.status, job.id, { state: "done", at: Date.now(), result });
    } catch (err) {
      if (nc.isClosed()) return; // we are going away: the server redelivers the job after ack_wait
      const reason = err instanceof Error ? err.message : String(err);
      if (ctx.delivery >= retry.maxDeliver) {
        return toDlq(ctx, `failed on delivery ${ctx.delivery} of ${retry.maxDeliver}: ${reason}`);
      }
      const delayMs = backoff(ctx.delivery);
      m.nak(delayMs);
      log.info({ worker: name, id: job.id, delivery: ctx.delivery, retryInMs: delayMs, reason }, "failed, will retry");
      opts.onOutcome?.({ kind: "retry", job, ctx, reason, delayMs });
      return;
    } finally {
      inHand[slot] = undefined;
      freeSlots.push(slot);
    }
    let acked: boolean | undefined;
    if (opts.confirmAcks) acked = await m.ackAck().catch(() => false);
    else m.ack();
    opts.onOutcome?.({ kind: "processed", job, ctx, acked });
  };

  // Pull only for free slots: a pull asks for as many jobs as there are slots neither busy nor already
  // asked for, so no job waits in a client buffer while its ack_wait runs out (a buffered job would be
  // redelivered to another worker and run twice). Pulls overlap, so freed slots are refilled at once.
  const concurrency = opts.concurrency ?? 1;
  // Wait until half the slots are free rather than pulling a few at a time: fewer, larger pulls.
  const refill = Math.max(1, Math.floor(concurrency / 2));
  let busy = 0;
  let wake: (() => void) | undefined;
  const changed = () => {
    wake?.();
    wake = undefined;
  };
  // Wakes the loop only when it has something to do (not once per job): enough free slots for a
  // pull, or, when stopping, the last job done.
  const freed = () => {
    if (stopping ? busy === 0 : concurrency - busy - puller.asked >= refill) changed();
  };
  const run = async (m: Delivery) => {
    try {
      if (stopping)
        m.nak(); // arrived as we stopped: straight back to the queue
      else await handle(m);
    } catch (err) {
      // Only an unexpected client error lands here; the job is redelivered after ack_wait.
      log.error({ worker: name, seq: m.seq, err: String(err) }, "job left for redelivery");
    } finally {
      busy--;
      freed();
    }
  };
  const puller = startPulling(nc, {
    stream: STREAM,
    consumer: CONSUMER,
    expiresMs: 1_000,
    onJob: (m) => {
      busy++;
      void run(m);
    },
    onChange: freed,
    onTick: () => {
      // A user not permitted to pull: the server only says so as a connection status. Stop, with one line.
      const refused = refusals.refused();
      if (refused && !stopping) {
        stopping = true;
        log.error({ worker: name }, explain(refused));
        changed();
      }
    },
    onStatus: (code, description) => log.debug({ worker: name, code, description }, "pulls ended by the server; pulling again"),
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
    if (nc.isClosed()) log.warn({ worker: name }, "connection closed; worker stopped");
  })();

  return {
    name,
    async stop(deadlineMs = Number.POSITIVE_INFINITY) {
      stopping = true;
      changed();
      if (deadlineMs === Number.POSITIVE_INFINITY) return done;
      const timer = delay(deadlineMs);
      const finished = await Promise.race([done.then(() => true), timer.then(() => false)]);
      timer.cancel();
      if (finished) return;
      // Past the deadline: the jobs still in hand go back to the queue now (a nak), for another worker
      // to take at once rather than after their ack_wait. Their handlers may have done part of the work.
      // Our own pulls end first (they expire within a second): a nak'ed job must not come back to us.
      await puller.close();
      const handedBack = inHand.filter((m) => m !== undefined);
      for (const m of handedBack) m.nak();
      log.warn({ worker: name, handed_back: handedBack.length }, "stop deadline passed: the jobs in hand went back to the queue");
      clearInterval(heartbeat);
    },
  };
}
