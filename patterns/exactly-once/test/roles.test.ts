// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Outcome, startApplier } from "../src/applier.js";
import { directoryBank } from "../src/effects.js";
import { charges, publishCharges } from "../src/producer.js";
import { COMMANDS, CONSUMER, LEDGER, STATES_BUCKET, setup } from "../src/setup.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "jsp-bank-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("exactly-once roles (nats/roles.conf)", () => {
  it("admin sets up, the producer requests charges, the applier applies each once", async () => {
    const admin = await roles.as("admin");
    await setup(await jetstreamManager(admin), admin);
    const list = charges(10, "c");
    expect(await publishCharges(await roles.as("exactly-once-producer"), list)).toMatchObject({ stored: 10, failed: 0 });
    const applier = await roles.as("exactly-once-applier");
    const outcomes: Outcome[] = [];
    const bank = directoryBank(dir);
    const states = await new Kvm(applier).open(STATES_BUCKET);
    const serving = await startApplier({ nc: applier, name: "a", states, bank, log, onOutcome: (o) => void outcomes.push(o) });
    await waitFor("every charge applied", () => outcomes.length === 10);
    await serving.stop();
    expect(outcomes.map((o) => [o.ledger, o.bank])).toEqual(list.map(() => ["applied", "applied"]));
  });

  it("refuses the producer applying, purging and deleting; the applier requesting, purging and deleting", async () => {
    expect(await refusal(jetstream(await roles.as("exactly-once-producer")).consumers.get(COMMANDS, CONSUMER))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${COMMANDS}.${CONSUMER}`),
    );
    const pm = await roles.manager("exactly-once-producer");
    expect(await refusal(pm.streams.purge(LEDGER))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${LEDGER}`));
    expect(await refusal(pm.streams.delete(COMMANDS))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${COMMANDS}`));
    expect(await refusal(publishCharges(await roles.as("exactly-once-applier"), charges(1, "forged")))).toMatch(
      /not published, e\.g\. forged-0: not permitted: this user may not publish to charges\.requested — /,
    );
    const am = await roles.manager("exactly-once-applier");
    expect(await refusal(am.streams.purge(LEDGER))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${LEDGER}`));
    expect(await refusal(am.streams.delete(COMMANDS))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${COMMANDS}`));
  });
});
