// Dead-letter operations: look at what the DLQ holds, put jobs back on the queue once their cause is
// fixed, or drop them. `pnpm run dlq <command>` in the repo, `npm run dlq <command>` in a starter.
//
// A requeue publishes the job back onto its original subject with the msg id "JOBS_DLQ-<seq>" and
// removes it from the DLQ only after the work stream acked it. A crash in between leaves the dead
// letter in place; requeueing it again within the work stream's duplicate window (2 minutes by
// default) is acked as a duplicate, so the job is queued once.
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager, type StoredMsg } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { connectFromEnv, isEntry, isNotFound, runMain, storedMessages, UserError } from "@repo/kit";
import { DlqHeaders } from "../dead-letter.js";
import { DLQ_PREFIX, DLQ_STREAM, STREAM, SUBJECT_PREFIX } from "../setup.js";
import { openStatusIfAny, requeuedStatus, type StatusStore } from "../status/status.js";

export interface DeadLetterInfo {
  seq: number;
  /** The job's id from its payload, if it has one (a malformed job may not). */
  id?: string;
  /** Where it was published (and where a requeue sends it back). */
  subject: string;
  reason: string;
  deliveries: number;
  by: string;
  /** When it was dead-lettered. */
  time: Date;
}

/**
 * The job subject a dead letter came from: its own DLQ subject (dlq.jobs.<task>) mapped back, which
 * only the stream decides. Its Dlq-Subject header is anyone's to write who may publish to the DLQ.
 */
const jobSubject = (m: StoredMsg) => `${SUBJECT_PREFIX}${m.subject.slice(DLQ_PREFIX.length)}`;

function describe(m: StoredMsg): DeadLetterInfo {
  let id: string | undefined;
  try {
    const job = JSON.parse(m.string()) as { id?: unknown };
    if (typeof job.id === "string") id = job.id;
  } catch {
    // a malformed job: no id to show
  }
  const h = m.header;
  return {
    seq: m.seq,
    id,
    subject: jobSubject(m),
    reason: h.get(DlqHeaders.Reason),
    deliveries: Number(h.get(DlqHeaders.Deliveries) || 0),
    by: h.get(DlqHeaders.By),
    time: m.time,
  };
}

/** Runs `op` on the DLQ stream; its absence (nothing has set up the work queue here) is one line. */
async function onDlq<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (isNotFound(err)) throw new UserError(`no stream ${DLQ_STREAM} on this server: run the work-queue setup (or its demo) first`);
    throw err;
  }
}

const dlqCount = async (jsm: JetStreamManager) => (await onDlq(() => jsm.streams.info(DLQ_STREAM))).state.messages;

export async function listDeadLetters(jsm: JetStreamManager): Promise<DeadLetterInfo[]> {
  return (await onDlq(() => storedMessages(jsm, DLQ_STREAM))).map(describe);
}

async function stored(jsm: JetStreamManager, seq: number): Promise<StoredMsg> {
  const m = await onDlq(() => jsm.streams.getMessage(DLQ_STREAM, { seq }));
  if (!m) throw new UserError(`no dead letter at sequence ${seq} in ${DLQ_STREAM} (see: dlq list)`);
  return m;
}

export async function showDeadLetter(jsm: JetStreamManager, seq: number): Promise<{ headers: [string, string[]][]; payload: string }> {
  const m = await stored(jsm, seq);
  return { headers: [...m.header], payload: m.string() };
}

export interface Requeued {
  seq: number;
  subject: string;
  /** Its sequence in the work stream. */
  jobSeq: number;
  /** It had been requeued already (a repeat after a crash): queued once. */
  duplicate: boolean;
}

/**
 * Puts a dead letter back on its original subject, then removes it from the DLQ. `beforeDelete` runs
 * between the two (the tests put a crash there). With a status store, the job's status is reset to
 * queued first: a worker acks a job whose status is final without running it.
 */
export async function requeue(
  js: JetStreamClient,
  jsm: JetStreamManager,
  seq: number,
  o: { beforeDelete?: () => Promise<void>; status?: StatusStore } = {},
): Promise<Requeued> {
  const m = await stored(jsm, seq);
  const { subject, id } = describe(m);
  const named = m.header.get(DlqHeaders.Subject);
  if (!m.subject.startsWith(`${DLQ_PREFIX}.`) || (named && named !== subject))
    throw new UserError(
      `dead letter ${seq} names Dlq-Subject ${JSON.stringify(named)}, not its own ${subject}: not requeued (see: dlq show ${seq})`,
    );
  // The job's own headers go back with it; the DLQ's notes and the original publish's Nats-* do not.
  const h = headers();
  for (const [key, values] of m.header) {
    const k = key.toLowerCase();
    if (!k.startsWith("dlq-") && !k.startsWith("nats-")) for (const v of values) h.append(key, v);
  }
  if (o.status && id) await requeuedStatus(o.status, id);
  const ack = await js.publish(subject, m.data, { headers: h, msgID: `${DLQ_STREAM}-${seq}`, expect: { streamName: STREAM } });
  await o.beforeDelete?.();
  await jsm.streams.deleteMessage(DLQ_STREAM, seq, false);
  return { seq, subject, jobSeq: ack.seq, duplicate: ack.duplicate };
}

export async function purgeDeadLetters(jsm: JetStreamManager): Promise<number> {
  return (await onDlq(() => jsm.streams.purge(DLQ_STREAM))).purged;
}

const usage = `usage: dlq <command>
  list [--json]              the dead letters: seq, age, deliveries, original subject, job id, reason
  show <seq>                 one dead letter's headers and payload
  requeue <seq>... | --all   back onto its original subject (removed from the DLQ once the queue has it)
  purge [--yes]              drop every dead letter (asks first, unless --yes)
  server: NATS_URL and the NATS CLI's credential and TLS variables`;

const age = (t: Date) => {
  const s = Math.max(0, Math.round((Date.now() - t.getTime()) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86_400)}d`;
};

const seqOf = (arg: string) => {
  const n = Number(arg);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`a dead letter's sequence is a positive integer, got "${arg}" (see: dlq list)`);
  return n;
};

async function confirmed(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(question);
  rl.close();
  return answer.trim().toLowerCase() === "yes";
}

if (isEntry(import.meta.url)) {
  runMain("dlq", async () => {
    const { values, positionals } = parseArgs({
      allowPositionals: true,
      options: { json: { type: "boolean" }, all: { type: "boolean" }, yes: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    });
    const [command, ...args] = positionals;
    if (values.help) return void process.stdout.write(`${usage}\n`);
    if (!command || !["list", "show", "requeue", "purge"].includes(command))
      throw new UserError(command ? `unknown command "${command}": list, show, requeue or purge (see --help)` : usage.split("\n")[0]!);
    const nc = await connectFromEnv("work-queue-dlq");
    try {
      const jsm = await jetstreamManager(nc);
      const out = (line: string) => process.stdout.write(`${line}\n`);
      if (command === "list") {
        const letters = await listDeadLetters(jsm);
        if (values.json) for (const d of letters) out(JSON.stringify(d));
        else {
          out(`${letters.length} dead letter(s) in ${DLQ_STREAM}`);
          for (const d of letters)
            out(`${String(d.seq).padStart(6)}  ${age(d.time).padStart(4)}  x${d.deliveries}  ${d.subject}  ${d.id ?? "-"}  ${d.reason}`);
        }
      } else if (command === "show") {
        if (args.length !== 1) throw new UserError("show takes one sequence: dlq show <seq>");
        const d = await showDeadLetter(jsm, seqOf(args[0]!));
        for (const [key, vals] of d.headers) for (const v of vals) out(`${key}: ${v}`);
        out("");
        out(d.payload);
      } else if (command === "requeue") {
        if ((values.all ?? false) === args.length > 0)
          throw new UserError("requeue takes sequences or --all: dlq requeue <seq>... | --all");
        const seqs = values.all ? (await listDeadLetters(jsm)).map((d) => d.seq) : args.map(seqOf);
        const [js, status] = [jetstream(nc), await openStatusIfAny(nc)];
        for (const seq of seqs) {
          const r = await requeue(js, jsm, seq, { status });
          out(`requeued ${seq} -> ${r.subject} (${STREAM} seq ${r.jobSeq}${r.duplicate ? ", already queued by an earlier requeue" : ""})`);
        }
        out(`${seqs.length} requeued; ${await dlqCount(jsm)} left in ${DLQ_STREAM}`);
      } else {
        const n = await dlqCount(jsm);
        if (!values.yes && !(await confirmed(`purge ${n} dead letter(s) from ${DLQ_STREAM}? type yes: `)))
          throw new UserError(
            process.stdin.isTTY
              ? "not purged"
              : "purge drops every dead letter: pass --yes to confirm when not in a terminal (nothing was purged)",
          );
        out(`purged ${await purgeDeadLetters(jsm)} dead letter(s) from ${DLQ_STREAM}`);
      }
    } finally {
      await nc.close();
    }
  });
}
