// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests } from "@repo/harness";
import { describe, expect, it } from "vitest";
import { payment, publishIdempotent } from "../src/producer.js";
import { readStored, storedTwice } from "../src/reader.js";
import { STREAM, setup } from "../src/setup.js";

const roles = rolesForTests();

describe("dedup-publish roles (nats/roles.conf)", () => {
  it("admin sets up, the producer publishes each payment twice, the reader finds each stored once", async () => {
    await setup(await jetstreamManager(await roles.as("admin")));
    const js = jetstream(await roles.as("dedup-publish-producer"));
    const payments = Array.from({ length: 10 }, (_, i) => payment(`pay-${i}`, 10 + i));
    for (const p of [...payments, ...payments]) await publishIdempotent(js, p);
    const stored = await readStored(await roles.as("dedup-publish-reader"));
    expect(stored.map((s) => s.id).sort()).toEqual(payments.map((p) => p.id).sort());
    expect(storedTwice(stored)).toEqual([]);
  });

  it("refuses the producer reading, purging and deleting; the reader publishing, purging and deleting", async () => {
    const producer = await roles.manager("dedup-publish-producer");
    expect(await refusal(readStored(await roles.as("dedup-publish-producer")))).toMatch(notPermitted("$JS.API.INFO"));
    expect(await refusal(producer.streams.info(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.INFO.${STREAM}`));
    expect(await refusal(producer.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(producer.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
    const reader = await roles.manager("dedup-publish-reader");
    const js = jetstream(await roles.as("dedup-publish-reader"));
    expect((await publishIdempotent(js, payment("forged", 1))).error).toMatch(notPermitted("payments.captured"));
    expect(await refusal(reader.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(reader.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });
});
