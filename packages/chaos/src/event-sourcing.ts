// Event sourcing under generated fault schedules: commands racing on a few accounts, each sent to a
// worker process that executes it (load, decide, append with optimistic concurrency), some sent again
// with the same id to the other worker (a caller's retry), malformed events written around the
// command side, and the rig's faults (rig.ts). Each worker is also a projection instance on the one
// consumer. The model, read at the end from the stream and the balances KV:
//   folding any account's stored history never takes its balance below zero; no command is stored
//   twice; an accepted command is stored, and one only ever refused is not; each projected balance
//   is the fold of its account's history, up to its last event.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { nanos } from "@nats-io/transport-node";
import { type AccountEvent, type Command, empty, fold } from "@patterns/event-sourcing/account";
import { PROJECTION, STREAM, setup, subjectOf } from "@patterns/event-sourcing/setup";
import { eventsOf, execute, parseStored } from "@patterns/event-sourcing/store";
import { sleep } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import fc from "fast-check";
import type { Scenario, Verdict } from "./chaos.js";
import type { Line, Pool, Proc } from "./pool.js";
import { type Fault, faultSteps, isFault, schedule, settle, startRig } from "./rig.js";

export type Step =
  | { op: "commands"; deposits: number; withdrawals: number; accounts: number }
  | { op: "again"; n: number }
  | { op: "malformed" }
  | Fault;

const WORKERS = 2;
const ACCOUNTS = ["A", "B"];
/** Malformed events go to an account of their own: the command side refuses to fold a history with one in it. */
const JUNK = "Z";
const SETTLE_MS = 45_000;

const commands = fc.record({
  op: fc.constant("commands" as const),
  deposits: fc.integer({ min: 0, max: 8 }),
  withdrawals: fc.integer({ min: 1, max: 8 }),
  accounts: fc.integer({ min: 1, max: ACCOUNTS.length }),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: commands },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("again" as const), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("malformed" as const) }) },
  // A process is paused past the projection's ack_wait (30 s, the server's default) only if its
  // pause says so; here a pause is a stall of its commands and its projection for a second or two.
  ...faultSteps(WORKERS, 1_000),
);

async function run(steps: Step[], pool: Pool): Promise<Verdict> {
  const results = new Map<string, { accepted: number; refused: number; errors: number }>();
  let balances: KV | undefined;
  let atomic = false;
  let retry: ((id: string) => void) | undefined; // a caller's retry of a command that failed: the same id, the other worker
  const rig = await startRig(pool, {
    role: "event-sourcing",
    workers: WORKERS,
    options: () => ({ atomic }),
    setup: async (nc) => {
      const jsm = await jetstreamManager(nc);
      const stores = await setup(jsm, nc);
      // A projection instance that goes silent (killed, paused) hands its events on after 1 s, not 30.
      await jsm.consumers.update(STREAM, PROJECTION, { ack_wait: nanos(1_000) });
      balances = stores.balances;
      atomic = stores.atomic;
    },
    onLine: (l: Line) => {
      if (typeof l.result !== "string") return;
      const r = results.get(l.result) ?? { accepted: 0, refused: 0, errors: 0 };
      if (l.error) {
        if (r.errors++ < 3) retry?.(l.result);
      } else if (l.accepted) r.accepted++;
      else r.refused++;
      results.set(l.result, r);
    },
  });
  try {
    const { nc } = rig;
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const sent = new Map<string, Command>();
    const events = new Map<string, number>(); // how many events a command makes when accepted
    const worker = (i: number) => i % WORKERS;
    let n = 0;
    const sentTo = new Map<string, Proc[]>(); // a command's answer comes unless every process it went to died
    const send = (c: Command, to: number) => sentTo.set(c.id, [...(sentTo.get(c.id) ?? []), rig.send(to, { execute: c })]);
    retry = (id) => send(sent.get(id)!, (sentTo.get(id)?.length ?? 0) % WORKERS);
    // Every account is opened first, by the schedule itself (a race to open one is not the point).
    for (const a of [...ACCOUNTS, JUNK]) await execute(js, jsm, atomic, { kind: "open", id: `open-${a}`, account: a, owner: "chaos" });
    for (const s of steps) {
      if (isFault(s)) await rig.apply(s);
      else if (s.op === "malformed") await js.publish(subjectOf(JUNK), `{"type": "deposited", "amount": "a lot"`);
      else if (s.op === "again") {
        for (const [i, c] of [...sent.values()].slice(-s.n).entries()) send(c, worker(i + 1));
      } else {
        const batch: Command[] = [];
        for (let i = 0; i < s.deposits + s.withdrawals; i++) {
          const account = ACCOUNTS[n % s.accounts]!;
          const id = `c${n++}`;
          const c: Command =
            i < s.deposits
              ? { kind: "deposit", id, account, amount: 1 + (n % 50) }
              : { kind: "withdraw", id, account, amount: 1 + ((n * 7) % 60), fee: n % 3 === 0 ? 2 : undefined };
          events.set(id, c.kind === "withdraw" && c.fee ? 2 : 1);
          batch.push(c);
        }
        // Interleaved across the workers: they race on each account.
        batch.forEach((c, i) => {
          sent.set(c.id, c);
          send(c, worker(i));
        });
      }
    }
    // Every command sent has an answer, or its worker died with it; then the projection catches up.
    const ended = (id: string) => {
      const r = results.get(id);
      return Boolean(r && (r.accepted || r.refused || r.errors > 3));
    };
    await settle(SETTLE_MS, async () => [...sentTo].every(([id, to]) => ended(id) || to.every((p) => !p.alive())));
    const settled = await settle(SETTLE_MS, async () => {
      const ci = await jsm.consumers.info(STREAM, PROJECTION);
      return ci.num_pending === 0 && ci.num_ack_pending === 0;
    });
    await sleep(300);

    const violations: string[] = [];
    if (!settled) violations.push(`the projection did not catch up within ${SETTLE_MS / 1000}s`);
    // The history, per account, in order; and each command's stored events.
    const history = new Map<string, { seq: number; events: AccountEvent[] }[]>();
    const stored = new Map<string, number>();
    for (const m of await storedMessages(jsm, STREAM)) {
      const account = m.subject.split(".").at(-1)!;
      let parsed: ReturnType<typeof parseStored>;
      try {
        parsed = parseStored(m.data);
      } catch {
        if (account !== JUNK) violations.push(`seq ${m.seq}: a malformed event on account ${account}`);
        history.set(account, [...(history.get(account) ?? []), { seq: m.seq, events: [] }]);
        continue;
      }
      const es = eventsOf(parsed);
      stored.set(parsed.command, (stored.get(parsed.command) ?? 0) + es.length);
      history.set(account, [...(history.get(account) ?? []), { seq: m.seq, events: es }]);
    }
    for (const [account, entries] of history) {
      let state = empty;
      for (const { seq, events: es } of entries) {
        for (const e of es) state = fold(state, e, seq);
        if (state.balance < 0) violations.push(`account ${account}: balance ${state.balance} after seq ${seq}`);
        state = { ...state, version: seq };
      }
      const projected = (await balances!.get(account))?.json<{ balance: number; seq: number }>();
      if (settled && (projected?.balance !== state.balance || projected?.seq !== state.version))
        violations.push(
          `account ${account}: projected ${JSON.stringify(projected)}, history says balance ${state.balance} at seq ${state.version}`,
        );
    }
    const counts = { commands: sent.size, accepted: 0, refused: 0, unanswered: 0, events: 0 };
    for (const [id] of sent) {
      const r = results.get(id);
      const got = stored.get(id) ?? 0;
      counts.events += got;
      if (got > (events.get(id) ?? 1)) violations.push(`${id}: stored ${got} events, makes ${events.get(id)}`);
      if (!r || (r.accepted === 0 && r.refused === 0)) counts.unanswered++;
      else if (r.accepted > 0) {
        counts.accepted++;
        if (got !== events.get(id)) violations.push(`${id}: accepted, but ${got} of its ${events.get(id)} events are stored`);
      } else {
        counts.refused++;
        // Only if every copy of it answered: one that went to a process that died may have stored it.
        const everyAnswered = (sentTo.get(id) ?? []).every((p) => p.alive());
        if (r.errors === 0 && everyAnswered && got > 0) violations.push(`${id}: refused, yet stored`);
      }
    }
    return { violations, counts, faults: rig.faults };
  } finally {
    await rig.close();
  }
}

export const eventSourcing: Scenario<Step> = {
  name: "event-sourcing",
  model: "no balance below zero in any stored history, no command stored twice, accepted ones stored, projections equal the history",
  steps: schedule(commands, step),
  run,
};
