// A job: what a producer publishes and a worker handles. Its id is its Nats-Msg-Id (and, with job
// status, its KV key); its task is the last tokens of its subject (jobs.<task>).
import { jsonObject, MalformedPayload } from "@repo/kit";

export interface Job {
  id: string;
  task: string;
  input?: unknown;
}

// The KV's key rule, and a subject token's.
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
