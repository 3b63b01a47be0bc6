// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { readBalance, startProjection } from "../src/projection.js";
import { BALANCES, PROJECTION, SNAPSHOTS, STREAM, setup } from "../src/setup.js";
import { execute, saveSnapshot } from "../src/store.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();

describe("event-sourcing roles (nats/roles.conf)", () => {
  it("admin sets up, the app executes commands and snapshots, the projection keeps the balance", async () => {
    const admin = await roles.as("admin");
    const { atomic } = await setup(await jetstreamManager(admin), admin);
    const app = await roles.as("event-sourcing-app");
    const [js, jsm] = [jetstream(app), await jetstreamManager(app)];
    const snapshots = await new Kvm(app).open(SNAPSHOTS);
    const open = await execute(js, jsm, atomic, { kind: "open", id: "c1", account: "a1", owner: "ann" }, { snapshots });
    const deposit = await execute(js, jsm, atomic, { kind: "deposit", id: "c2", account: "a1", amount: 50 }, { known: open.state });
    expect(deposit).toMatchObject({ accepted: true, state: { balance: 50 } });
    await saveSnapshot(snapshots, "a1", deposit.state);
    const projector = await roles.as("event-sourcing-projection");
    const balances = await new Kvm(projector).open(BALANCES);
    const serving = await startProjection({ nc: projector, balances, log });
    await waitFor("the projection's balance", async () => (await readBalance(balances, "a1")).balance === 50);
    await serving.stop();
  });

  it("refuses the app deleting the projection's consumer, purging or deleting; the projection writing events, purging or deleting", async () => {
    const am = await roles.manager("event-sourcing-app");
    expect(await refusal(am.consumers.delete(STREAM, PROJECTION))).toMatch(notPermitted(`$JS.API.CONSUMER.DELETE.${STREAM}.${PROJECTION}`));
    expect(await refusal(am.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(am.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
    const projector = await roles.as("event-sourcing-projection");
    expect(await refusal(jetstream(projector).publish("events.account.a1", "{}"))).toMatch(notPermitted("events.account.a1"));
    const pm = await roles.manager("event-sourcing-projection");
    expect(await refusal(pm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(pm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });
});
