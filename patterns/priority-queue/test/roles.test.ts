// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { publishTasks, tasksAt } from "../src/producer.js";
import { consumerFor, STREAM, setup } from "../src/setup.js";
import { type Done, startWorker } from "../src/worker.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();

describe("priority-queue roles (nats/roles.conf)", () => {
  it("admin sets up, the producer enqueues, the worker takes every task once", async () => {
    const admin = await roles.as("admin");
    await setup(await jetstreamManager(admin), admin.info?.version);
    const tasks = [...tasksAt("low", 5), ...tasksAt("high", 5)];
    await publishTasks(await roles.as("priority-queue-producer"), tasks);
    const done: Done[] = [];
    const worker = await startWorker({
      nc: await roles.as("priority-queue-worker"),
      name: "w",
      handler: async () => {},
      log,
      onDone: (d) => void done.push(d),
    });
    await waitFor("every task done", () => done.length === tasks.length);
    await worker.stop();
    expect(done.map((d) => d.task.id).sort()).toEqual(tasks.map((t) => t.id).sort());
  });

  it("refuses the producer taking, purging and deleting; the worker enqueueing, purging and deleting", async () => {
    const high = consumerFor("high");
    expect(await refusal(jetstream(await roles.as("priority-queue-producer")).consumers.get(STREAM, high))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${STREAM}.${high}`),
    );
    const pm = await roles.manager("priority-queue-producer");
    expect(await refusal(pm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(pm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
    expect(await refusal(publishTasks(await roles.as("priority-queue-worker"), tasksAt("high", 1, "forged")))).toMatch(
      /not published, e\.g\. forged-0: not permitted: this user may not publish to tasks\.high — /,
    );
    const wm = await roles.manager("priority-queue-worker");
    expect(await refusal(wm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(wm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });
});
