// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { startSubscriber } from "../src/consumer.js";
import { orderEvents, publishEvents } from "../src/producer.js";
import { CONSUMERS, setup, streams } from "../src/setup.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();

describe("fanout roles (nats/roles.conf)", () => {
  it("admin sets up, the producer publishes, every consumer gets every event once", async () => {
    await setup(await jetstreamManager(await roles.as("admin")));
    const got = new Map<string, Set<string>>();
    const consumer = await roles.as("fanout-consumer");
    const subs = [];
    for (const retention of ["limits", "interest"] as const)
      for (const name of CONSUMERS)
        subs.push(
          await startSubscriber({
            nc: consumer,
            retention,
            name,
            log,
            onEvent: (r) =>
              void got.set(
                `${retention}/${name}`,
                (got.get(`${retention}/${name}`) ?? new Set()).add(`${r.event.orderId}/${r.event.type}`),
              ),
          }),
        );
    const events = orderEvents(10);
    await publishEvents(await roles.as("fanout-producer"), events);
    await waitFor("every consumer got every event", () => [...got.values()].every((s) => s.size === events.length) && got.size === 6);
    await Promise.all(subs.map((s) => s.stop()));
  });

  it("refuses the producer consuming, purging and deleting; the consumer publishing, purging and deleting", async () => {
    const { name } = streams.limits;
    const producer = await roles.manager("fanout-producer");
    expect(await refusal(jetstream(await roles.as("fanout-producer")).consumers.get(name, "billing"))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${name}.billing`),
    );
    expect(await refusal(producer.streams.purge(name))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${name}`));
    expect(await refusal(producer.streams.delete(name))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${name}`));
    const consumer = await roles.manager("fanout-consumer");
    expect(await refusal(jetstream(await roles.as("fanout-consumer")).publish("limits.orders.o-1.created", "{}"))).toMatch(
      notPermitted("limits.orders.o-1.created"),
    );
    expect(await refusal(consumer.streams.purge(name))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${name}`));
    expect(await refusal(consumer.streams.delete(name))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${name}`));
    expect(await refusal(consumer.consumers.delete(name, "billing"))).toMatch(notPermitted(`$JS.API.CONSUMER.DELETE.${name}.billing`));
  });
});
