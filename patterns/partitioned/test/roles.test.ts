// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { eventsFor, publishInOrder } from "../src/producer.js";
import { consumerFor, STREAM, setup, supported } from "../src/setup.js";
import { type Handled, startWorker } from "../src/worker.js";

const roles = rolesForTests();
const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const timings = { leaseMs: 1_500, ackWaitMs: 3_000 };

describe.runIf(supported(process.env.NATS_SERVER_VERSION ?? "99"))("partitioned roles (nats/roles.conf)", () => {
  it("admin sets up, the producer publishes by key, a worker takes the partitions and applies each key in order", async () => {
    const admin = await roles.as("admin");
    await setup(await jetstreamManager(admin), admin, 3, timings);
    const handled: Handled[] = [];
    const worker = await startWorker({
      nc: await roles.as("partitioned-worker"),
      name: "w",
      partitions: 3,
      timings,
      log,
      onHandled: (h) => void handled.push(h),
    });
    try {
      const byKey = eventsFor(6, 4, `roles-${Date.now().toString(36)}`);
      expect(await publishInOrder(await roles.as("partitioned-producer"), byKey)).toMatchObject({ stored: 24, failed: [] });
      await waitFor("24 applied", () => handled.filter((h) => h.result === "applied").length === 24, { timeoutMs: 20_000 });
      expect(worker.held()).toEqual([0, 1, 2]);
    } finally {
      await worker.stop();
    }
  });

  it("refuses the producer reading a partition or reaching one directly, and the worker publishing or deleting", async () => {
    const producer = await roles.as("partitioned-producer");
    expect(await refusal(producer.request("order.0.forged", "x"))).toMatch(notPermitted("order.0.forged"));
    const asProducer = await roles.manager("partitioned-producer");
    expect(await refusal(asProducer.consumers.info(STREAM, consumerFor(0)))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${STREAM}.${consumerFor(0)}`),
    );
    const worker = await roles.as("partitioned-worker");
    expect(await refusal(worker.request("order.k", "x"))).toMatch(notPermitted("order.k"));
    const asWorker = await roles.manager("partitioned-worker");
    expect(await refusal(asWorker.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(asWorker.consumers.delete(STREAM, consumerFor(0)))).toMatch(
      notPermitted(`$JS.API.CONSUMER.DELETE.${STREAM}.${consumerFor(0)}`),
    );
  });
});
