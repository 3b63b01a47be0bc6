import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { AckPolicy, jetstream, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { ApiCodes, apiCode, publishBatch, type Serving, versionAtLeast } from "@repo/kit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ApplierOptions, type Outcome, startApplier } from "../src/applier.js";
import { type Bank, ChargeRefused, directoryBank } from "../src/effects.js";
import { type Charge, charges, encodeCharge, publishCharges } from "../src/producer.js";
import { COMMANDS, CONSUMER, LEDGER, STATES_BUCKET, setup, type Timings } from "../src/setup.js";

const e2e = serverForTests({ reconnect: true });
let states: KV;
let bank: Bank;
let bankDir: string;
const running: Serving[] = [];
const connections: NatsConnection[] = [];

async function fresh(timings: Partial<Timings> = {}) {
  for (const s of [COMMANDS, LEDGER, `KV_${STATES_BUCKET}`, "GUARD"]) await e2e.jsm.streams.delete(s).catch(() => {});
  states = await setup(e2e.jsm, e2e.nc, { ackWaitMs: 1_000, ...timings });
  bankDir = mkdtempSync(join(tmpdir(), "eo-bank-"));
  bank = directoryBank(bankDir);
}
beforeEach(() => fresh());
afterEach(async () => {
  await Promise.all(running.splice(0).map((a) => a.stop()));
  for (const c of connections.splice(0)) if (!c.isClosed()) await c.close();
  rmSync(bankDir, { recursive: true, force: true });
});

const outcomes: Outcome[] = [];
beforeEach(() => void outcomes.splice(0));
async function applier(name: string, extra: Partial<ApplierOptions> = {}) {
  const anc = await connect({ servers: e2e.server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  connections.push(anc);
  running.push(await startApplier({ nc: anc, name, states, bank, log: e2e.log, onOutcome: (o) => void outcomes.push(o), ...extra }));
  return anc;
}
const deliveriesOf = (id: string) => outcomes.filter((o) => o.charge.id === id);
const commandsLeft = async () => (await e2e.jsm.streams.info(COMMANDS)).state.messages;

async function allApplied(list: Charge[], timeoutMs = 30_000) {
  await waitFor(
    "every charge applied and acked",
    async () => new Set(outcomes.map((o) => o.charge.id)).size >= list.length && (await commandsLeft()) === 0,
    {
      timeoutMs,
      detail: async () => {
        const ci = await e2e.jsm.consumers.info(COMMANDS, CONSUMER).catch((err: unknown) => String(err));
        const state =
          typeof ci === "string"
            ? ci
            : { pending: ci.num_pending, ack_pending: ci.num_ack_pending, waiting: ci.num_waiting, delivered: ci.delivered };
        return { outcomes: outcomes.length, left: await commandsLeft(), consumer: state };
      },
    },
  );
}

/** The guarantee: each effect applied exactly once per charge, none missing, none twice, none extra. */
async function expectEffectsExactlyOnce(list: Charge[]) {
  const ids = list.map((c) => c.id).sort();
  const { state } = await e2e.jsm.streams.info(LEDGER, { subjects_filter: "charges.ledger.>" });
  const perCharge = Object.entries(state.subjects ?? {}).map(([s, n]) => [s.split(".").at(-1)!, n] as const);
  expect(perCharge.map(([id]) => id).sort()).toEqual(ids); // in the ledger: every charge, no other
  expect(perCharge.filter(([, n]) => n !== 1)).toEqual([]); // each entry once
  expect(state.messages).toBe(ids.length);
  expect(bank.charged().sort()).toEqual(ids); // at the bank: every charge once (one key each)
  for (const id of ids) expect((await states.get(id))?.string(), id).toBe("applied");
}

describe(`exactly-once on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("applies each charge's effects exactly once when the producer publishes every command three times and resends on timeouts", async () => {
    const list = charges(300, "dup");
    const first = await publishCharges(e2e.nc, list);
    // 1ms ack timeouts: most first sends are resent with the same msg id although they were stored.
    const resent = await publishBatch(e2e.nc, list.map(encodeCharge), { stream: COMMANDS, timeoutMs: 1, attempts: 8, what: "charge(s)" });
    const third = await publishCharges(e2e.nc, list);
    expect(first).toMatchObject({ stored: 300, failed: 0 });
    expect(resent).toMatchObject({ stored: 0, duplicates: 300 });
    expect(third).toMatchObject({ stored: 0, duplicates: 300 });
    await applier("a");
    await applier("b");
    await allApplied(list);
    await expectEffectsExactlyOnce(list);
  });

  it("does not apply again a command published again after the duplicate window: the ledger subject and the bank's key hold", async () => {
    await fresh({ windowMs: 500 });
    const [c] = charges(1, "late");
    await applier("a");
    await publishCharges(e2e.nc, [c!]);
    await allApplied([c!]);
    await sleep(800); // the window is over: the same msg id is new again, on both streams
    expect(await publishCharges(e2e.nc, [c!])).toMatchObject({ stored: 1, duplicates: 0 }); // stored twice over time
    await waitFor("the second delivery handled", () => outcomes.length === 2);
    expect(outcomes[1]).toMatchObject({ ledger: "already", bank: "already", acked: true });
    await expectEffectsExactlyOnce([c!]);
  });

  it("applies once a charge whose ack was lost with its connection, closed after the effects", async () => {
    const list = charges(20, "conn");
    const victim = list[3]!.id;
    let died = false;
    const anc = await applier("dies", {
      beforeAck: async (c) => {
        if (c.id !== victim || died) return;
        died = true;
        await anc.close(); // the effects are done, the ack never leaves
      },
    });
    await publishCharges(e2e.nc, list);
    await waitFor("the victim applied on the dying connection", () => died);
    await applier("survivor");
    await allApplied(list);
    expect(deliveriesOf(victim).length).toBeGreaterThanOrEqual(1);
    expect(deliveriesOf(victim).at(-1)).toMatchObject({ applier: "survivor", ledger: "already", bank: "already" });
    await expectEffectsExactlyOnce(list);
  });

  it("applies once a charge whose handler outlived ack_wait: the late ack and the redelivery both land, the effect once", async () => {
    const list = charges(5, "slow");
    const slow = list[2]!.id;
    let slept = false;
    await applier("slow", {
      beforeAck: async (c) => {
        if (c.id !== slow || slept) return;
        slept = true;
        // A handler busy on the CPU (or a long GC pause) for 2 s: the process sends nothing meanwhile,
        // not even the loop's working(), and ack_wait is 1 s: the server hands the charge to another applier.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2_000);
      },
    });
    await applier("fast");
    await publishCharges(e2e.nc, list);
    await allApplied(list);
    await waitFor("both deliveries of the slow charge done", () => deliveriesOf(slow).length >= 2, { timeoutMs: 10_000 });
    const [late, again] = [deliveriesOf(slow).find((o) => o.applier === "slow"), deliveriesOf(slow).find((o) => o.delivery > 1)];
    expect(again).toBeDefined(); // delivered again while the first handler was still running
    expect(late?.acked).toBeDefined(); // whatever the server said to the late ack, the effects held:
    await expectEffectsExactlyOnce(list);
  });

  it("applies once a charge whose applier process was SIGKILLed after the effects and before the ack", async () => {
    const list = charges(10, "kill");
    const victim = list[5]!.id;
    const child = spawn(process.execPath, ["--import", "tsx", "test/applier-process.ts"], {
      env: { ...process.env, NATS_URL: e2e.server.url, BANK_DIR: bankDir, DIE_AFTER: victim },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const seen: string[] = [];
    lines.on("line", (l) => seen.push(l));
    const exited = new Promise((r) => child.once("exit", r));
    await waitFor("the applier process ready", () => seen.includes("ready"));
    await publishCharges(e2e.nc, list);
    await waitFor("the victim applied, then the process killed", () => seen.includes(`applied ${victim}`));
    await exited;
    await applier("survivor");
    await allApplied([list[5]!], 15_000); // comes back after ack_wait
    await waitFor("all applied", async () => (await commandsLeft()) === 0);
    expect(deliveriesOf(victim)[0]).toMatchObject({ applier: "survivor", ledger: "already", bank: "already" });
    expect(deliveriesOf(victim)[0]!.delivery).toBeGreaterThanOrEqual(2);
    await expectEffectsExactlyOnce(list);
  });

  // A server given by NATS_URL (docker compose) cannot be killed from here.
  it.skipIf(!!process.env.NATS_URL)("applies every charge exactly once across a server SIGKILL and restart mid-run", async () => {
    const list = charges(600, "crash");
    await applier("a");
    await applier("b");
    await publishCharges(e2e.nc, list);
    await waitFor("a third applied", () => outcomes.length >= 200, { timeoutMs: 30_000, everyMs: 5 });
    await e2e.server.kill(); // acks and effects in flight die with it
    await sleep(300);
    await e2e.server.restart(); // same port and store: the appliers reconnect
    await waitFor("every charge applied", () => new Set(outcomes.map((o) => o.charge.id)).size >= list.length, { timeoutMs: 60_000 });
    await expectEffectsExactlyOnce(list);
    await waitFor("nothing left to deliver", async () => {
      const ci = await e2e.jsm.consumers.info(COMMANDS, CONSUMER);
      return ci.num_pending + ci.num_ack_pending === 0 && ci.ack_floor.stream_seq === list.length;
    });
    if (versionAtLeast(e2e.nc.info?.version, "2.10.0")) {
      await waitFor("the queue empty", async () => (await commandsLeft()) === 0);
    } else {
      // 2.9: after a SIGKILL, commands the consumer has acked (all of them: its ack floor is the last
      // sequence) can stay in the WorkQueue stream; they are never delivered again (see the README).
      expect(await commandsLeft()).toBeLessThanOrEqual(list.length);
    }
  });

  it("ends a charge the bank refuses for good: terminated, neither effect applied, its state says why, never redelivered", async () => {
    const list = charges(5, "mixed");
    const refused = list[2]!;
    const refusing: Bank = {
      charge: async (c) => {
        if (c.id === refused.id) throw new ChargeRefused("account closed");
        return bank.charge(c);
      },
      charged: () => bank.charged(),
    };
    await publishCharges(e2e.nc, list);
    await applier("a", { bank: refusing });
    const rest = list.filter((c) => c !== refused);
    await allApplied(list);
    await sleep(1_500); // a redelivery (ack_wait is 1 s here, a nak 0.5 s) would show up now
    expect(deliveriesOf(refused.id)).toMatchObject([{ bank: "refused", ledger: "skipped", reason: "account closed" }]);
    expect((await states.get(refused.id))?.string()).toBe("refused: account closed");
    await expectEffectsExactlyOnce(rest); // the ledger and the bank hold only the other four
  });

  it("never ends a charge the bank applied while its ledger entry is not, however many deliveries it takes", async () => {
    const [c] = charges(1, "ok");
    await publishCharges(e2e.nc, [c!]);
    // Twenty deliveries (the old max_deliver) used up at once: a raw puller nak's each.
    const consumer = await jetstream(e2e.nc).consumers.get(COMMANDS, CONSUMER);
    for (let i = 0; i < 19; i++) {
      const m = await consumer.next({ expires: 2_000 });
      expect(m?.info.deliveryCount).toBe(i + 1);
      m!.nak();
    }
    // The ledger refuses for now (no stream takes its subject: "no responders"), the bank takes it.
    const ledger = (await e2e.jsm.streams.info(LEDGER)).config;
    await e2e.jsm.streams.update(LEDGER, { ...ledger, subjects: ["charges.elsewhere.*"] });
    await applier("a", { retryMaxMs: 500 });
    await waitFor("the bank charged it", () => bank.charged().includes(c!.id));
    await sleep(1_500); // deliveries 20, 21 and more, each nak'ed
    await e2e.jsm.streams.update(LEDGER, ledger);
    await allApplied([c!]);
    expect(deliveriesOf(c!.id)).toMatchObject([{ ledger: "applied", bank: "already", acked: true }]);
    expect(deliveriesOf(c!.id)[0]!.delivery).toBeGreaterThan(20);
    await expectEffectsExactlyOnce([c!]);
  });

  it("terminates a malformed command without applying it, and applies the rest", async () => {
    const list = charges(3, "ok");
    await jetstream(e2e.nc).publish("charges.requested", '{"id": "bad id with spaces", "account": "a", "amount": 1}', { msgID: "bad-1" });
    await publishCharges(e2e.nc, list);
    await applier("a");
    await allApplied(list);
    await expectEffectsExactlyOnce(list);
  });

  it("shows why the ledger is a Limits stream: on a work queue, create-if-absent holds only until the ack deletes the message", async () => {
    await e2e.jsm.streams.add({ name: "GUARD", subjects: ["guard.*"], retention: RetentionPolicy.Workqueue, storage: StorageType.Memory });
    const js = jetstream(e2e.nc);
    const ifAbsent = { expect: { lastSubjectSequence: 0 } };
    await js.publish("guard.x", "1", ifAbsent);
    const refused = await js.publish("guard.x", "2", ifAbsent).catch((err: unknown) => err);
    expect(apiCode(refused)).toBe(ApiCodes.StreamWrongLastSequence); // while kept: refused, no time window
    await e2e.jsm.consumers.add("GUARD", { durable_name: "take", ack_policy: AckPolicy.Explicit });
    const m = await (await js.consumers.get("GUARD", "take")).next();
    await m!.ackAck(); // the work queue deletes it
    const again = await js.publish("guard.x", "3", ifAbsent); // and the subject is empty again: accepted
    expect(again.seq).toBe(2);
  });
});
