// Publishes tasks at a priority level: the level is the subject.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, jsonObject, MalformedPayload, publishBatch, runMain, UserError } from "@repo/kit";
import { LEVELS, type Level, STREAM, subjectFor } from "./setup.js";

export interface Task {
  id: string;
  level: Level;
}

/** A task from its payload, checked: an id and a known level (else a MalformedPayload). */
export function parseTask(data: Uint8Array): Task {
  const task = jsonObject(data);
  const level = LEVELS.find((l) => l === task.level);
  if (typeof task.id !== "string" || !level)
    throw new MalformedPayload(`expected {"id": string, "level": ${LEVELS.map((l) => `"${l}"`).join(" | ")}}`);
  return { id: task.id, level };
}

/** Publishes through the fast publisher (see publisher.ts), each task with its id as Nats-Msg-Id. */
export async function publishTasks(
  nc: NatsConnection,
  tasks: Task[],
  opts: { window?: number; subject?: (t: Task) => string; stream?: string } = {},
): Promise<void> {
  const subject = opts.subject ?? ((t: Task) => subjectFor(t.level));
  const msgs = tasks.map((t) => ({ subject: subject(t), data: enc.encode(JSON.stringify(t)), id: t.id }));
  await publishBatch(nc, msgs, { stream: opts.stream ?? STREAM, window: opts.window, what: "task(s)" });
}

const enc = new TextEncoder();

export function tasksAt(level: Level, count: number, prefix: string = level): Task[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i}`, level }));
}

// CLI: `tsx src/producer.ts <high|normal|low> [count]` (setup must have run: main.ts does it).
if (isEntry(import.meta.url)) {
  runMain("producer", async (_signal, log) => {
    const [level, n = "10"] = process.argv.slice(2);
    if (!LEVELS.includes(level as Level)) throw new UserError(`level must be one of ${LEVELS.join(", ")}, got "${level ?? ""}"`);
    const count = intOption("count", n);
    const nc = await connectFromEnv("priority-producer");
    await publishTasks(nc, tasksAt(level as Level, count, `${level}-${Date.now().toString(36)}`));
    log.info({ level, count }, "published");
    await nc.drain();
  });
}
