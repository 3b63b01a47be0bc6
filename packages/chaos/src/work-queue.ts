// The work queue under generated fault schedules: publish jobs (good, poison, malformed), publish
// some again with the same ids, and the rig's faults (rig.ts). Publishes run in the background, so
// the faults after them land while they are in flight. The workers record job status.
// The model, read from the server at the end (job status KV, the DLQ, the work stream):
//   every job stored ends done or dead-lettered, not both, and not twice in the DLQ; none is left;
//   a poison or malformed job is dead-lettered, never done; a good job is dead-lettered only when
//   faults took all its deliveries ("no ack after ...", "ran out of deliveries ..."); a done job's handler ran. Handler runs
//   beyond the first are redeliveries: counted, allowed.
import { jetstreamManager } from "@nats-io/jetstream";
import { type DeadLetterMover, startDeadLetterMover } from "@patterns/work-queue/dead-letter";
import { encodeJob, type Outgoing, publishJobs } from "@patterns/work-queue/producer";
import { CONSUMER, DLQ_STREAM, type RetryPolicy, STREAM, setup } from "@patterns/work-queue/setup";
import { type StatusStore, setupStatus } from "@patterns/work-queue/status/status";
import { sleep } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import fc from "fast-check";
import { pino } from "pino";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step = { op: "publish"; good: number; poison: number; malformed: number } | { op: "republish"; n: number } | Fault;

const WORKERS = 2;
// Short waits so a schedule takes seconds: a job comes back 1 s after its worker went silent.
const RETRY: RetryPolicy = { backoffMs: [100, 200, 300], maxDeliver: 4, ackWaitMs: 1_000 };
/** How long every job has to end after the last step. */
const SETTLE_MS = 45_000;

const publish = fc.record({
  op: fc.constant("publish" as const),
  good: fc.integer({ min: 1, max: 40 }),
  poison: fc.integer({ min: 0, max: 2 }),
  malformed: fc.integer({ min: 0, max: 2 }),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: publish },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("republish" as const), n: fc.integer({ min: 1, max: 10 }) }) },
  ...faultSteps(WORKERS, RETRY.ackWaitMs!),
);

type Kind = "good" | "poison" | "malformed";
/** Dead-lettered because faults took every delivery: by a worker on a grace delivery, the mover's advisory, or its sweep. */
const outOfTries = (reason: string) => reason.startsWith("no ack after") || reason.startsWith("ran out of deliveries");
const enc = new TextEncoder();

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const ran = new Map<string, number>();
  let status: StatusStore | undefined;
  let mover: DeadLetterMover | undefined;
  const rig = await startRig(pool, {
    role: "work-queue-worker",
    workers: WORKERS,
    options: () => ({ retry: RETRY }),
    setup: async (nc) => {
      await setup(await jetstreamManager(nc), RETRY);
      status = await setupStatus(nc);
      mover = await startDeadLetterMover(nc, pino({ level: "silent" }));
    },
    onLine: (l: Line) => {
      if (typeof l.ran === "string") ran.set(l.ran, (ran.get(l.ran) ?? 0) + 1);
    },
  });
  try {
    const { nc } = rig;
    const jsm = await jetstreamManager(nc);
    // What each publish was answered: stored at a seq, or an error (then it may or may not be stored).
    const kind = new Map<string, Kind>();
    const seqOf = new Map<string, number>();
    const refused = new Set<string>();
    const sent: Outgoing[] = [];
    const pending: Promise<unknown>[] = [];
    const send = (jobs: Outgoing[]) =>
      pending.push(
        publishJobs(nc, jobs, 64, (r, i) => {
          if (r.error) refused.add(jobs[i]!.id);
          else if (r.seq > 0) seqOf.set(jobs[i]!.id, r.seq);
        }).catch(() => undefined), // each job's answer is recorded above
      );
    let n = 0;
    const job = (k: Kind): Outgoing => {
      const id = `${k[0]}${n++}`;
      kind.set(id, k);
      if (k === "malformed") return { id, subject: "jobs.resize", data: enc.encode(`{"id": "${id}", oops`) };
      return encodeJob({ id, task: k === "poison" ? "poison" : "resize" });
    };
    for (const s of steps) {
      if (isFault(s)) await rig.apply(s);
      else if (s.op === "republish") send(sent.filter((j) => kind.get(j.id) === "good").slice(0, s.n));
      else {
        const jobs = [
          ...Array.from({ length: s.good }, () => job("good")),
          ...Array.from({ length: s.poison }, () => job("poison")),
          ...Array.from({ length: s.malformed }, () => job("malformed")),
        ];
        sent.push(...jobs);
        send(jobs);
      }
    }
    await Promise.all(pending);

    // Every job ends: the dlq-mover sweeps for jobs whose advisory it missed (a restart, a pause).
    const settled = await settle(SETTLE_MS, async () => {
      const [si, ci] = await Promise.all([jsm.streams.info(STREAM), jsm.consumers.info(STREAM, CONSUMER)]);
      if (si.state.messages > 0 && ci.num_ack_pending === 0) await mover!.sweep();
      return si.state.messages === 0 && ci.num_ack_pending === 0;
    });
    await sleep(300); // the last lines of the workers
    await mover!.stop();

    const violations: string[] = [];
    const left = (await jsm.streams.info(STREAM)).state.messages;
    if (!settled || left > 0) violations.push(`${left} job(s) still in ${STREAM} ${SETTLE_MS / 1000}s after the last step`);
    const dlq = new Map<number, string[]>(); // the job's seq -> why it was dead-lettered, per copy
    for (const m of await storedMessages(jsm, DLQ_STREAM)) {
      const seq = Number(m.header.get("Dlq-Sequence"));
      dlq.set(seq, [...(dlq.get(seq) ?? []), m.header.get("Dlq-Reason")]);
    }
    const counts = { published: 0, refused: 0, done: 0, dead_lettered: 0, exhausted: 0, repeats: 0 };
    const stored = new Set(seqOf.values());
    for (const [id, k] of kind) {
      const seq = seqOf.get(id);
      const done = (await status!.kv.get(id))?.json<{ state: string }>()?.state === "done";
      const reasons = seq ? (dlq.get(seq) ?? []) : [];
      counts.repeats += Math.max(0, (ran.get(id) ?? 0) - 1);
      if (done && !ran.get(id)) violations.push(`${id}: done, but its handler never finished`);
      if (!seq) {
        // Refused or unanswered (the server went away meanwhile): if it was stored after all, it ends once.
        counts.refused++;
        if (!refused.has(id)) violations.push(`${id}: no answer to its publish`);
        continue;
      }
      counts.published++;
      if (done) counts.done++;
      if (reasons.length) counts.dead_lettered++;
      if (reasons.length > 1) violations.push(`${id}: dead-lettered ${reasons.length} times`);
      if (done && reasons.length) violations.push(`${id}: done and dead-lettered (${reasons[0]})`);
      if (!done && !reasons.length && left === 0) violations.push(`${id} (${k}, seq ${seq}): lost: neither done, dead-lettered nor queued`);
      if (k !== "good" && done) violations.push(`${id}: a ${k} job is done`);
      if (k === "malformed" && reasons.length && !reasons[0]!.startsWith("malformed payload") && !outOfTries(reasons[0]!))
        violations.push(`${id}: malformed, dead-lettered as "${reasons[0]}"`);
      if (k === "good" && reasons.length) {
        if (outOfTries(reasons[0]!)) counts.exhausted++;
        else violations.push(`${id}: a good job dead-lettered: "${reasons[0]}"`);
      }
    }
    if (refused.size === 0)
      for (const seq of dlq.keys()) if (!stored.has(seq)) violations.push(`seq ${seq}: dead-lettered, but no job was stored there`);
    return { violations, counts, faults: rig.faults };
  } finally {
    await mover?.stop().catch(() => undefined);
    await rig.close();
  }
}

export const workQueue: Scenario<Step> = {
  name: "work-queue",
  model: "every stored job ends done or dead-lettered, once, none left; poison and malformed jobs dead-lettered",
  steps: schedule(publish, step),
  run,
};
