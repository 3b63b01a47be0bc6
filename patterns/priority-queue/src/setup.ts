// The topology of the priority queue, declared in one place.
// - Every server: one WorkQueue stream TASKS with a subject per level and one consumer per level;
//   workers ask the levels in order (src/worker.ts).
// - nats-server >= 2.12: TASKS_TIERED, one consumer with a `prioritized` priority group: workers pull
//   with a priority (0 = preferred tier), the server serves the preferred tier first.
// - nats-server >= 2.11: TASKS_OVERFLOW, one consumer with an `overflow` priority group: overflow
//   workers get tasks only while the backlog is above their min_pending.
import {
  AckPolicy,
  type ConsumerConfig,
  type JetStreamManager,
  type PriorityPolicy,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, type StreamSpec, UserError, versionAtLeast } from "@repo/kit";

export const LEVELS = ["high", "normal", "low"] as const;
export type Level = (typeof LEVELS)[number];

export const STREAM = "TASKS";
export const subjectFor = (level: Level) => `tasks.${level}`;
export const consumerFor = (level: Level) => `tasks-${level}`;

export const TIERED_STREAM = "TASKS_TIERED";
export const OVERFLOW_STREAM = "TASKS_OVERFLOW";
export const GROUP = "workers";

const workQueue = (name: string, subjects: string[]): StreamSpec => ({
  name,
  subjects,
  retention: RetentionPolicy.Workqueue, // a task is removed when acked: the stream is the backlog
  storage: StorageType.File,
});

export const tasksStream = workQueue(STREAM, LEVELS.map(subjectFor));

function taskConsumer(name: string, extra: Partial<ConsumerConfig>): Partial<ConsumerConfig> {
  return {
    durable_name: name,
    ack_policy: AckPolicy.Explicit, // a task is done only when its worker says so
    ack_wait: nanos(30_000), // a dead worker's task comes back after this
    ...extra,
  };
}

export interface Native {
  /** `prioritized` groups: nats-server >= 2.12. */
  prioritized: boolean;
  /** `overflow` groups: nats-server >= 2.11. */
  overflow: boolean;
}

export function nativeSupport(version: string | undefined): Native {
  return { prioritized: versionAtLeast(version, "2.12.0"), overflow: versionAtLeast(version, "2.11.0") };
}

/** Creates what this server supports, or checks what exists. Idempotent. Returns what is native. */
export async function setup(jsm: JetStreamManager, version: string | undefined): Promise<Native> {
  await ensureStream(jsm, tasksStream);
  for (const level of LEVELS) await ensureConsumer(jsm, STREAM, taskConsumer(consumerFor(level), { filter_subject: subjectFor(level) }));

  const native = nativeSupport(version);
  const groups: [boolean, string, string, PriorityPolicy][] = [
    [native.prioritized, TIERED_STREAM, "tiered.tasks", "prioritized"],
    [native.overflow, OVERFLOW_STREAM, "overflow.tasks", "overflow"],
  ];
  for (const [supported, stream, subject, policy] of groups) {
    if (!supported) continue;
    await ensureStream(jsm, workQueue(stream, [`${subject}.>`]));
    const config = await ensureConsumer(jsm, stream, taskConsumer(GROUP, { priority_groups: [GROUP], priority_policy: policy }));
    // A server that does not know a field drops it silently: check that it took the policy.
    if (config.priority_policy !== policy) {
      throw new UserError(
        `nats-server ${version} accepted consumer ${stream}/${GROUP} without priority_policy=${policy} — it needs nats-server >= ${policy === "prioritized" ? "2.12" : "2.11"}`,
      );
    }
  }
  return native;
}
