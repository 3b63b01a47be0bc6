// Job status around a handler: withStatus(handler, ...) is a handler that records each job's run in
// the job_status bucket (status.ts) and leaves the worker unchanged.
//   before the handler: "running" (its message and delivery); a job that already ended is not run again
//   progress(f):        "running" with the progress, for waitForResult's watchers
//   after it succeeds:  "done" with its result, before the worker acks
//   dead-lettered:      "dead_lettered" with the reason
//   past its last try:  "done" means its ack was lost: the worker acks it rather than dead-letter it
// Recording is not part of the job: a status that cannot be written never makes the handler run
// again nor sends a job that succeeded to the DLQ.
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { type Logger, messageOf } from "@repo/kit";
import type { Job } from "../job.js";
import { ALREADY_ENDED, type Handler, type JobContext } from "../worker.js";
import { advance, getStatus, isFinal, type JobStatus, type StatusStore } from "./status.js";

export interface StatusOptions {
  store: StatusStore;
  /** The worker's connection: its largest message bounds a result, and a closed one stops retries. */
  nc: NatsConnection;
  log: Logger;
}

/**
 * `handler` with job status. Wrap your handler in it, not it in another function: the worker finds
 * the hooks (doneBefore, deadLettered) on the function it is given.
 */
export function withStatus(handler: Handler, { store, nc, log }: StatusOptions): Handler {
  const running = (ctx: JobContext, progress?: number): JobStatus => ({
    state: "running",
    at: Date.now(),
    worker: ctx.worker,
    seq: ctx.seq,
    delivery: ctx.delivery,
    progress,
  });

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

  // A write that fails for a passing reason (a timeout, a leader election) is tried again for a
  // while; the job stays in hand meanwhile (its heartbeat goes on), so it is not handed to another worker.
  const recordDone = async (id: string, result: unknown, seq: number, worker: string) => {
    const done = doneStatus(result, seq);
    for (let tries = 1; ; tries++) {
      try {
        await advance(store, id, done);
        return;
      } catch (err) {
        if (tries >= 5 || nc.isClosed()) {
          // Last, done without the result (the bucket may take less than a message: max_value_size).
          const without: JobStatus = { state: "done", at: Date.now(), seq, resultError: `result not kept: ${messageOf(err)}` };
          const kept = "result" in done && done.result !== undefined && !nc.isClosed();
          if (
            kept &&
            (await advance(store, id, without).then(
              () => true,
              () => false,
            ))
          )
            return;
          log.warn({ worker, id, err: messageOf(err) }, "done, but its status could not be recorded");
          return;
        }
        await delay(200 * tries);
      }
    }
  };

  const tracked: Handler = async (job: Job, ctx: JobContext) => {
    if (isFinal(await advance(store, job.id, running(ctx)))) {
      // It ended already and this is a redelivery (its ack was lost): do not run it again.
      log.info({ worker: ctx.worker, id: job.id, delivery: ctx.delivery }, "already ended (status store): acked without running it again");
      return ALREADY_ENDED;
    }
    const withProgress: JobContext = {
      get seq() {
        return ctx.seq;
      },
      get subject() {
        return ctx.subject;
      },
      delivery: ctx.delivery,
      worker: ctx.worker,
      async progress(fraction) {
        await ctx.progress(fraction);
        await advance(store, job.id, running(ctx, fraction));
      },
    };
    const result = await handler(job, withProgress);
    if (result !== ALREADY_ENDED) await recordDone(job.id, result, ctx.seq, ctx.worker);
    return result;
  };
  tracked.doneBefore = async (job) => (await getStatus(store, job.id))?.state === "done";
  tracked.deadLettered = async (job, seq, reason) => {
    await advance(store, job.id, { state: "dead_lettered", at: Date.now(), reason, seq });
  };
  return tracked;
}
