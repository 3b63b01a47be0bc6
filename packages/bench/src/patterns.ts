// One benchmark for each pattern not measured elsewhere (the publisher is dedup-publish's, the work
// queue has its own), each reported as a ratio of the matching limit measured in the same run.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { Account, Command } from "@patterns/event-sourcing/account";
import { BALANCES, STREAM as EVENTS, setup as eventsSetup, SNAPSHOTS } from "@patterns/event-sourcing/setup";
import { execute } from "@patterns/event-sourcing/store";
import { startApplier } from "@patterns/exactly-once/applier";
import { directoryBank } from "@patterns/exactly-once/effects";
import { charges, publishCharges } from "@patterns/exactly-once/producer";
import { LEDGER as CHARGE_LEDGER, COMMANDS, setup as chargesSetup, STATES_BUCKET } from "@patterns/exactly-once/setup";
import { startSubscriber } from "@patterns/fanout/consumer";
import { orderEvents, publishEvents } from "@patterns/fanout/producer";
import { CONSUMERS, setup as fanoutSetup, streams } from "@patterns/fanout/setup";
import { appendEvents, ledgerEvents } from "@patterns/ordered-replay/producer";
import { replay } from "@patterns/ordered-replay/replayer";
import { STREAM as LEDGER, setup as ledgerSetup } from "@patterns/ordered-replay/setup";
import { publishTasks, type Task } from "@patterns/priority-queue/producer";
import { LEVELS, STREAM as TASKS, setup as tasksSetup } from "@patterns/priority-queue/setup";
import { startWorker as startPriorityWorker } from "@patterns/priority-queue/worker";
import { createLogger } from "@repo/kit";
import { type Context, rssMb, timed, within } from "./measure.js";

const log = createLogger("bench");
log.level = "warn";

async function deleteStreams(ctx: Context, names: string[]) {
  const jsm = await jetstreamManager(ctx.nc);
  for (const name of names) await jsm.streams.delete(name).catch(() => undefined);
  return jsm;
}

export async function patternBenches(ctx: Context): Promise<void> {
  // fanout: a backlog of events read by the three independent consumers (each acks each event).
  {
    const jsm = await deleteStreams(ctx, [streams.limits.name, streams.interest.name]);
    await fanoutSetup(jsm);
    const events = orderEvents(Math.ceil(ctx.n / 3), Date.now().toString(36));
    await publishEvents(ctx.nc, events, ["limits"]);
    const rss = [rssMb()];
    let received = 0;
    const want = events.length * CONSUMERS.length;
    let allIn: () => void = () => {};
    const done = new Promise<void>((r) => (allIn = r));
    const r = await timed(async () => {
      const subs = await Promise.all(
        CONSUMERS.map((name) =>
          startSubscriber({ nc: ctx.nc, retention: "limits", name, log, onEvent: () => void (++received === want && allIn()) }),
        ),
      );
      await within(done, 300_000);
      await Promise.all(subs.map((s) => s.stop()));
      return received;
    });
    rss.push(rssMb());
    ctx.expect("fanout", r.count, want);
    ctx.record({
      name: "fanout",
      what: `${CONSUMERS.length} durable consumers each read and ack the backlog (deliveries/s)`,
      ...r,
      ratioOf: "consume.ack",
      rssMb: rss,
    });
  }

  // ordered-replay: the replayer (ordered consumer, position checkpoints) over the whole ledger.
  {
    const jsm = await deleteStreams(ctx, [LEDGER]);
    const positions = await ledgerSetup(jsm, ctx.nc);
    await appendEvents(ctx.nc, ledgerEvents(ctx.n));
    const rss = [rssMb()];
    const r = await timed(
      async () =>
        (await replay({ nc: ctx.nc, log, name: "bench", positions, from: "start", checkpointEvery: 1_000, handler: () => {} })).count,
    );
    rss.push(rssMb());
    ctx.expect("ordered-replay", r.count, ctx.n);
    ctx.record({
      name: "ordered-replay",
      what: "the replayer from the start, checkpoint every 1,000",
      ...r,
      ratioOf: "consume.ordered",
      rssMb: rss,
    });
  }

  // priority-queue: 4 workers drain a backlog spread over three levels, high first.
  {
    const jsm = await deleteStreams(ctx, [TASKS]);
    await tasksSetup(jsm, ctx.nc.info?.version);
    const run = Date.now().toString(36);
    // A pull request per task (no_wait, highest level first) makes this the slowest pattern: fewer tasks.
    const count = Math.min(ctx.n, 20_000);
    const tasks: Task[] = Array.from({ length: count }, (_, i) => ({ id: `${run}-${i}`, level: LEVELS[i % 3]! }));
    await publishTasks(ctx.nc, tasks);
    const conns = await Promise.all([1, 2, 3, 4].map(() => connect({ servers: ctx.url })));
    const rss = [rssMb()];
    let handled = 0;
    let allDone: () => void = () => {};
    const done = new Promise<void>((r) => (allDone = r));
    const r = await timed(async () => {
      const workers = await Promise.all(
        conns.map((nc, i) =>
          startPriorityWorker({ nc, name: `p${i}`, log, handler: async () => {}, onDone: () => void (++handled === count && allDone()) }),
        ),
      );
      await within(done, 300_000);
      await Promise.all(workers.map((w) => w.stop()));
      return handled;
    });
    rss.push(rssMb());
    await Promise.all(conns.map((c) => c.close()));
    ctx.expect("priority-queue", r.count, count);
    ctx.record({
      name: "priority-queue",
      what: "4 workers drain a backlog over 3 levels (subjects per level, no_wait pulls)",
      ...r,
      ratioOf: "consume.ack",
      rssMb: rss,
    });
  }

  // exactly-once: 4 appliers apply a backlog of charges, two idempotent effects and a double ack each.
  {
    const jsm = await deleteStreams(ctx, [COMMANDS, CHARGE_LEDGER, `KV_${STATES_BUCKET}`]);
    const states = await chargesSetup(jsm, ctx.nc);
    const count = Math.min(ctx.n, 10_000); // about five round trips per charge
    const list = charges(count, `b${Date.now().toString(36)}`);
    await publishCharges(ctx.nc, list);
    const bankDir = mkdtempSync(join(tmpdir(), "bench-bank-"));
    const bank = directoryBank(bankDir);
    const conns = await Promise.all([1, 2, 3, 4].map(() => connect({ servers: ctx.url })));
    const rss = [rssMb()];
    let applied = 0;
    let allDone: () => void = () => {};
    const done = new Promise<void>((r) => (allDone = r));
    const r = await timed(async () => {
      const appliers = await Promise.all(
        conns.map((nc, i) =>
          startApplier({ nc, name: `a${i}`, states, bank, log, onOutcome: () => void (++applied === count && allDone()) }),
        ),
      );
      await within(done, 300_000);
      await Promise.all(appliers.map((a) => a.stop()));
      return applied;
    });
    rss.push(rssMb());
    await Promise.all(conns.map((c) => c.close()));
    ctx.expect("exactly-once (bank charges)", bank.charged().length, count);
    rmSync(bankDir, { recursive: true, force: true });
    ctx.expect("exactly-once", r.count, count);
    ctx.record({
      name: "exactly-once",
      what: "4 appliers: ledger entry (msg id + subject guard), KV claim, keyed bank call, ackAck per charge",
      ...r,
      ratioOf: "consume.ack",
      rssMb: rss,
    });
  }

  // event-sourcing: 16 writers, one account each, deposit in turn (load the tail, decide, append with
  // the expected last subject sequence): the commands' rate against pipelined js.publish().
  {
    const jsm = await deleteStreams(ctx, [EVENTS, `KV_${SNAPSHOTS}`, `KV_${BALANCES}`]);
    const { atomic } = await eventsSetup(jsm, ctx.nc);
    const js = jetstream(ctx.nc);
    const run = Date.now().toString(36);
    const writers = 16;
    const each = Math.ceil(Math.min(ctx.n, 10_000) / writers);
    let n = 0;
    const id = () => `${run}-${n++}`;
    for (let w = 0; w < writers; w++)
      await execute(js, jsm, atomic, { kind: "open", id: id(), account: `w${w}-${run}`, owner: "bench" } satisfies Command);
    const rss = [rssMb()];
    const r = await timed(async () => {
      const done = await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          let ok = 0;
          let known: Account | undefined; // the writer keeps its account's state, as a service would
          for (let i = 0; i < each; i++) {
            const c: Command = { kind: "deposit", id: id(), account: `w${w}-${run}`, amount: 1 };
            const r = await execute(js, jsm, atomic, c, { known });
            if (r.accepted) ok++;
            known = r.state;
          }
          return ok;
        }),
      );
      return done.reduce((a, b) => a + b, 0);
    });
    rss.push(rssMb());
    ctx.expect("event-sourcing", r.count, writers * each);
    ctx.record({
      name: "event-sourcing",
      what: `${writers} writers, an account each: state kept, read what is new, decide, append with the expected sequence`,
      ...r,
      ratioOf: "ingest.js_publish",
      rssMb: rss,
    });
  }
}
