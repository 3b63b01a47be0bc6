// A worker: pulls jobs from the shared durable consumer and competes with the other workers for them.
// Success -> ack (not waiting for the server's answer; confirmAcks waits). Failure -> nak with the backoff delay, or on the last
// delivery -> DLQ. Malformed payload -> DLQ at once (retrying cannot fix it).
import { jetstream } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import {
  type Delivery,
  explain,
  jsonObject,
  type Logger,
  MalformedPayload,
  messageOf,
  pullRefusals,
  startPulling,
  terminate,
} from "@repo/kit";
import { deadLetter } from "./dead-letter.js";
import { ackWait, CONSUMER, defaultRetry, type RetryPolicy, STREAM } from "./setup.js";
import { advance, getStatus, isFinal, type JobStatus, type StatusStore } from "./status.js";

export interface Job {
  id: string;
  task: string;
  input?: unknown;
}

// A job's id is its Nats-Msg-Id and, with job status, its KV key (the KV's key rule); its task is
// the last tokens of its subject (jobs.<task>).
const KEY = /^[-/=.\w]+$/;
const TASK = /^[-\w]+(\.[-\w]+)*$/;

/** Why a job's id or task cannot be used, or undefined when both can. */
export function badJob(job: { id: string; task: string }): string | undefined {
  if (!KEY.test(job.id) || job.id.startsWith(".") || job.id.endsWith(".") || job.id.includes(".."))
    return `job id ${JSON.stringify(job.id)} cannot be a status key: use letters, digits and - _ = / . (not first, last or twice in a row)`;
  if (!TASK.test(job.task))
    return `job task ${JSON.stringify(job.task)} is not a subject token: use letters, digits, - and _, dot-separated`;
  return undefined;
}

/** A job from its payload, checked: a malformed one (MalformedPayload) goes to the DLQ at once. */
export function parseJob(data: Uint8Array): Job {
  const job = jsonObject(data);
  if (typeof job.id !== "string" || typeof job.task !== "string") throw new MalformedPayload('expected {"id": string, "task": string}');
  const bad = badJob({ id: job.id, task: job.task });
  if (bad) throw new MalformedPayload(bad);
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
    return { state: "running" as const, at: Date.now(), worker: this.worker, seq: this.seq, delivery: this.delivery, progress };
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
  const backoff = (delivery: number) => retry.backoffMs[Math.min(delivery, retry.backoffMs.length) - 1] ?? 1_000;
  let stopping = false;
  // Jobs being handled, and since when: a slot each (slots are reused, so a job costs no map entry).
  // One timer tells the server we are alive on every job in hand for a while, so a long job's
  // ack_wait does not run out and hand it to another worker.
  const inHand: (Delivery | undefined)[] = [];
  const since: number[] = [];
  const freeSlots: number[] = [];
  const beatEvery = Math.max(100, ackWait(retry) / 3);
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
      await advance(opts.status, job.id, { state: "dead_lettered", at: Date.now(), reason, seq: m.seq }).catch((err: unknown) =>
        log.warn({ id: job.id, err: String(err) }, "dead-lettered, but its status could not be recorded"),
      );
    terminate(m, reason, nc.info?.version);
    log.warn({ worker: name, seq: m.seq, id: job?.id, reason }, "dead-lettered");
    opts.onOutcome?.({ kind: "dead_lettered", job, ctx, reason });
  };

  // A result that is not JSON, or too large for a message, is not kept: done without it, saying why.
  const room = Math.max(0, (nc.info?.max_payload ?? 1_048_576) - 4_096); // headers (a TTL) and the status around it
  const doneStatus = (result: unknown, seq: number): JobStatus => {
    const done = { state: "done" as const, at: Date.now(), result, seq };
    let json: string | undefined;
    try {
      json = JSON.stringify(done);
    } catch (err) {
      return { state: "done", at: done.at, seq, resultError: `result not kept: ${messageOf(err)}` };
    }
    if (Buffer.byteLength(json ?? "") > room)
      return { state: "done", at: done.at, seq, resultError: `result not kept: larger than a message can be (${room} bytes)` };
    return done;
  };
  // The job succeeded: recording that is not part of it, so a status that cannot be written never
  // makes the handler run again nor sends the job to the DLQ. A write that fails for a passing reason
  // (a timeout, a leader election) is tried again for a while; the job stays in hand meanwhile (its
  // heartbeat goes on), so it is not handed to another worker.
  const recordDone = async (status: StatusStore, id: string, result: unknown, seq: number) => {
    const done = doneStatus(result, seq);
    for (let tries = 1; ; tries++) {
      try {
        await advance(status, id, done);
        return;
      } catch (err) {
        if (tries >= 5 || nc.isClosed()) {
          // Last, done without the result (the bucket may take less than a message: max_value_size).
          const without: JobStatus = { state: "done", at: Date.now(), seq, resultError: `result not kept: ${messageOf(err)}` };
          if (done.state === "done" && "result" in done && done.result !== undefined && !nc.isClosed())
            if (
              await advance(status, id, without).then(
                () => true,
                () => false,
              )
            )
              return;
          log.warn({ worker: name, id, err: messageOf(err) }, "done, but its status could not be recorded");
          return;
        }
        await delay(200 * tries);
      }
    }
  };

  const handle = async (m: Delivery) => {
    let job: Job;
    const ctx = new Context(m, name, opts.status);
    if (ctx.delivery > retry.maxDeliver) {
      // A grace delivery: the handler had its tries and the last one never answered (the worker died,
      // hung, or could not reach the DLQ, or its ack was lost). Do not run it again.
      try {
        ctx.job = parseJob(m.data);
      } catch {
        // malformed as well: the reason below still says what happened
      }
      // With job status, "done" is the ack that was lost: the job succeeded, it is not a dead letter.
      if (opts.status && ctx.job && (await getStatus(opts.status, ctx.job.id))?.state === "done") {
        log.info({ worker: name, id: ctx.job.id, delivery: ctx.delivery }, "done on its last try, its ack lost: acked now");
        m.ack();
        return;
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
      let result: unknown;
      try {
        if (opts.status && isFinal(await advance(opts.status, job.id, ctx.running()))) {
          // It ended already and this is a redelivery (its ack was lost): do not run it again.
          log.info({ worker: name, id: job.id, delivery: ctx.delivery }, "already ended (status store): acked without running it again");
          m.ack();
          return;
        }
        result = await handler(job, ctx);
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
      }
      if (opts.status) await recordDone(opts.status, job.id, result, m.seq);
    } finally {
      inHand[slot] = undefined;
      freeSlots.push(slot);
    }
    let acked: boolean | undefined;
    if (opts.confirmAcks)
      acked = await m.ackAck(); // false when the server did not answer in time: never throws
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
    onStray: (subject) => log.warn({ worker: name, subject }, "a message on the pull inbox that is not a delivery of ours: ignored"),
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
