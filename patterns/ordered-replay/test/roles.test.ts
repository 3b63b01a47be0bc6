// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { notPermitted, refusal, rolesForTests } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { appendEvents, ledgerEvents } from "../src/producer.js";
import { loadPosition, replay } from "../src/replayer.js";
import { POSITIONS_BUCKET, STREAM, setup } from "../src/setup.js";

const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();

describe("ordered-replay roles (nats/roles.conf)", () => {
  it("admin sets up, the producer appends, the replayer replays in order and saves its position", async () => {
    const admin = await roles.as("admin");
    await setup(await jetstreamManager(admin), admin);
    const seqs = await appendEvents(await roles.as("ordered-replay-producer"), ledgerEvents(50));
    const replayer = await roles.as("ordered-replay-replayer");
    const positions = await new Kvm(replayer).open(POSITIONS_BUCKET);
    const seen: number[] = [];
    const r = await replay({ nc: replayer, name: "audit", positions, from: "start", handler: (e) => void seen.push(e.seq), log });
    expect(r.count).toBe(50);
    expect(seen).toEqual(seqs);
    expect(await loadPosition(positions, "audit")).toBe(seqs.at(-1));
  });

  it("refuses the producer replaying, purging and deleting; the replayer appending, purging and deleting", async () => {
    const producer = await roles.as("ordered-replay-producer");
    const nothing = () => {};
    expect(await refusal(replay({ nc: producer, name: "x", from: "start", handler: nothing, log }))).toMatch(/^not permitted: /);
    const pm = await roles.manager("ordered-replay-producer");
    expect(await refusal(pm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(pm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
    const rm = await roles.manager("ordered-replay-replayer");
    expect(await refusal(appendEvents(await roles.as("ordered-replay-replayer"), ledgerEvents(1)))).toMatch(
      /not published, e\.g\. not permitted: this user may not publish to ledger\./,
    );
    expect(await refusal(rm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(rm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });
});
