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
import { addConsumer, CONSUMERS, setup as fanoutSetup, streams } from "@patterns/fanout/setup";
import { appendEvents, ledgerEvents } from "@patterns/ordered-replay/producer";
import { replay } from "@patterns/ordered-replay/replayer";
import { STREAM as LEDGER, setup as ledgerSetup } from "@patterns/ordered-replay/setup";
import { eventsFor, publishInOrder } from "@patterns/partitioned/producer";
import { LEASES, STREAM as ORDER_EVENTS, setup as partitionedSetup, STATE } from "@patterns/partitioned/setup";
import { startWorker as startPartitionedWorker } from "@patterns/partitioned/worker";
import { publishTasks, type Task } from "@patterns/priority-queue/producer";
import {
  LEVELS,
  nativeSupport,
  OVERFLOW_STREAM,
  STREAM as TASKS,
  TIERED_STREAM,
  setup as tasksSetup,
} from "@patterns/priority-queue/setup";
import { startWorker as startPriorityWorker, startTierWorker } from "@patterns/priority-queue/worker";
import { createLogger } from "@repo/kit";
import { type Context, inFreshProcess, interleaved, rssMb, rssSampler, type Sample, timed, within } from "./measure.js";

const log = createLogger("bench");
log.level = "warn";

async function deleteStreams(ctx: Context, names: string[]) {
  const jsm = await jetstreamManager(ctx.nc);
  for (const name of names) await jsm.streams.delete(name).catch(() => undefined);
  return jsm;
}

/** Each of `names` reads the fanout's backlog through its durable consumer; deliveries counted. */
async function fanoutRun(ctx: Context, names: readonly string[], perConsumer: number, confirmAcks: boolean): Promise<Sample> {
  const jsm = await jetstreamManager(ctx.nc);
  for (const name of names) {
    await jsm.consumers.delete(streams.limits.name, name).catch(() => undefined);
    await addConsumer(jsm, "limits", name);
  }
  let received = 0;
  const want = perConsumer * names.length;
  let allIn: () => void = () => {};
  const done = new Promise<void>((r) => (allIn = r));
  return timed(async () => {
    const subs = await Promise.all(
      names.map((name) =>
        startSubscriber({ nc: ctx.nc, retention: "limits", name, log, confirmAcks, onEvent: () => void (++received === want && allIn()) }),
      ),
    );
    await within(done, 300_000);
    await Promise.all(subs.map((s) => s.stop()));
    return received;
  });
}

export async function patternBenches(ctx: Context): Promise<void> {
  // fanout: a backlog of events read by independent durable consumers, each acking each event. One
  // consumer alone is the pattern's per-consumer rate (the goal); three at once share the machine.
  {
    const jsm = await deleteStreams(ctx, [streams.limits.name, streams.interest.name]);
    await fanoutSetup(jsm);
    const events = orderEvents(Math.ceil(ctx.n / 3), Date.now().toString(36));
    await publishEvents(ctx.nc, events, ["limits"]);
    const rss = [rssMb()];
    const r = await interleaved(ctx.quick ? 1 : 3, {
      one: () => fanoutRun(ctx, ["billing"], events.length, false).then((x) => x.count),
      three: () => fanoutRun(ctx, CONSUMERS, events.length, false).then((x) => x.count),
    });
    const confirmed = await fanoutRun(ctx, ["shipping"], events.length, true);
    rss.push(rssMb());
    ctx.expect("fanout (one consumer)", r.one.count, events.length);
    ctx.expect("fanout (three consumers)", r.three.count, events.length * CONSUMERS.length);
    ctx.expect("fanout (confirmed acks)", confirmed.count, events.length);
    ctx.record({
      name: "fanout",
      what: "one durable consumer reads and acks the backlog (acks not awaited)",
      ...r.one,
      ratioOf: "consume.ack",
      goal: 0.6,
    });
    ctx.record({
      name: "fanout.three",
      what: `${CONSUMERS.length} durable consumers at once, deliveries/s over all`,
      ...r.three,
      ratioOf: "consume.ack",
      rssMb: rss,
    });
    ctx.record({ name: "fanout.confirmed", what: "one consumer with confirmAcks (m.ackAck() per event)", ...confirmed, ratioOf: "fanout" });
  }

  // ordered-replay: the replayer over the whole ledger, in a process of its own (alone.ts) so that its
  // client memory is its own: not what the benchmarks before it left behind, nor the ledger's filling.
  {
    const jsm = await deleteStreams(ctx, [LEDGER]);
    await ledgerSetup(jsm, ctx.nc);
    await appendEvents(ctx.nc, ledgerEvents(ctx.n));
    const r = await inFreshProcess(ctx, "ordered-replay", ctx.n);
    ctx.record({
      name: "ordered-replay",
      what: "the replayer from the start, checkpoint every 1,000 (a process of its own)",
      ...r,
      ratioOf: "consume.ordered",
      goal: 0.8,
      rssFlat: 0.15,
    });
  }

  // priority-queue: 4 workers drain a backlog spread over three levels, high first.
  {
    const r = await priorityRun(ctx, priorityTasks(ctx.n));
    ctx.expect("priority-queue", r.count, ctx.n);
    ctx.record({
      name: "priority-queue",
      what: "4 workers drain a backlog over 3 levels: no_wait pulls of up to 16 from the highest level with tasks",
      ...r,
      ratioOf: "consume.ack",
      goal: 0.5,
      rssMb: r.rssMb,
    });
    const one = Math.min(ctx.n, 20_000); // a pull per task: fewer tasks, the same rate
    const single = await priorityRun(ctx, priorityTasks(one), { batch: 1 });
    ctx.expect("priority-queue (batch 1)", single.count, one);
    ctx.record({
      name: "priority-queue.batch1",
      what: "the same with batch: 1 (a no_wait pull per task)",
      ...single,
      ratioOf: "priority-queue",
    });
    if (nativeSupport(ctx.nc.info?.version).prioritized) {
      const tiered = await priorityRun(ctx, priorityTasks(ctx.n), { tiered: true });
      ctx.expect("priority-queue (prioritized group)", tiered.count, ctx.n);
      ctx.record({
        name: "priority-queue.prioritized",
        what: "4 workers in a native `prioritized` group (2.12+; one tier, no levels: the server's own pull path)",
        ...tiered,
        ratioOf: "consume.ack",
      });
    }
  }

  // partitioned: a backlog of 256 keys' events over 1, 4 and 16 partitions, 4 workers sharing them by
  // leases, each event applied through its key's fence (a KV read and a compare-and-set) and acked,
  // one in flight per partition: how the rate grows with the partitions, against the work queue's
  // ceiling (consume.queue, every message in flight at once).
  for (const partitions of [1, 4, 16]) {
    const r = await partitionedRun(ctx, partitions, Math.min(ctx.n, ctx.quick ? 2_000 : 10_000));
    ctx.record({
      name: `partitioned.${partitions}`,
      what: `4 workers, ${partitions} partition(s), one event in flight each, applied in order per key (KV compare-and-set)`,
      ...r,
      ratioOf: "consume.queue",
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

/** The ordered-replay pattern's replayer reads the ledger (`count` events, filled already) from the start; client RSS sampled. */
export async function orderedReplayRun(ctx: Context, count: number): Promise<Sample & { rssMb: number[] }> {
  const positions = await ledgerSetup(await jetstreamManager(ctx.nc), ctx.nc); // the stream and bucket are there: no change
  const rss = rssSampler(count);
  const r = await timed(
    async () =>
      (await replay({ nc: ctx.nc, log, name: "bench", positions, from: "start", checkpointEvery: 1_000, handler: () => rss.tick() })).count,
  );
  ctx.expect("ordered-replay", r.count, count);
  return { ...r, rssMb: rss.end() };
}

/** `count` tasks spread over the three levels in turn (the same tasks go to BullMQ in queues.ts). */
export function priorityTasks(count: number): Task[] {
  const run = Date.now().toString(36);
  return Array.from({ length: count }, (_, i) => ({ id: `${run}-${i}`, level: LEVELS[i % LEVELS.length]! }));
}

/**
 * The priority-queue pattern drains `tasks` with 4 workers on their own connections: level workers
 * (`batch` tasks per pull), or with `tiered` workers in the native `prioritized` group (nats-server
 * 2.12+), all in the preferred tier, the tasks published to that group's stream.
 */
export async function priorityRun(
  ctx: Context,
  tasks: Task[],
  opts: { batch?: number; tiered?: boolean } = {},
): Promise<Sample & { rssMb: number[] }> {
  const jsm = await deleteStreams(ctx, [TASKS, TIERED_STREAM, OVERFLOW_STREAM]);
  await tasksSetup(jsm, ctx.nc.info?.version);
  await publishTasks(ctx.nc, tasks, opts.tiered ? { subject: () => "tiered.tasks.bench", stream: TIERED_STREAM } : {});
  const conns = await Promise.all([1, 2, 3, 4].map(() => connect({ servers: ctx.url })));
  const rss = [rssMb()];
  let handled = 0;
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const handler = async () => {};
  const onDone = () => void (++handled === tasks.length && allDone());
  const r = await timed(async () => {
    const workers = await Promise.all(
      conns.map((nc, i) =>
        opts.tiered
          ? startTierWorker({ nc, stream: TIERED_STREAM, name: `t${i}`, pull: { priority: 0 }, log, handler, onDone })
          : startPriorityWorker({ nc, name: `p${i}`, log, batch: opts.batch, handler, onDone }),
      ),
    );
    await within(done, 300_000);
    await Promise.all(workers.map((w) => w.stop()));
    return handled;
  });
  rss.push(rssMb());
  await Promise.all(conns.map((c) => c.close()));
  return { ...r, rssMb: rss };
}

/** The partitioned pattern: `count` events of 256 keys published in order, then 4 workers apply them all. */
async function partitionedRun(ctx: Context, partitions: number, count: number): Promise<Sample> {
  const jsm = await deleteStreams(ctx, [ORDER_EVENTS, `KV_${LEASES}`, `KV_${STATE}`]);
  const timings = { leaseMs: 3_000, ackWaitMs: 30_000 };
  await partitionedSetup(jsm, ctx.nc, partitions, timings);
  const byKey = eventsFor(256, Math.ceil(count / 256), `b${Date.now().toString(36)}`);
  const total = byKey.reduce((n, events) => n + events.length, 0);
  const conns = await Promise.all([1, 2, 3, 4].map(() => connect({ servers: ctx.url })));
  let applied = 0;
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const workers = await Promise.all(
    conns.map((nc, i) =>
      startPartitionedWorker({
        nc,
        name: `w${i}`,
        partitions,
        timings,
        log,
        onHandled: (h) => void (h.result === "applied" && ++applied === total && allDone()),
      }),
    ),
  );
  // Timed once the partitions are spread (a few lease rounds), from the first publish to the last apply.
  const fair = Math.ceil(partitions / workers.length);
  const spread = () => workers.reduce((n, w) => n + w.held().length, 0) === partitions && workers.every((w) => w.held().length <= fair);
  for (let i = 0; i < 300 && !spread(); i++) await new Promise((r) => setTimeout(r, 100));
  const r = await timed(async () => {
    const published = await publishInOrder(ctx.nc, byKey);
    ctx.expect(`partitioned.${partitions} (published)`, published.stored, total);
    await within(done, 300_000);
    return applied;
  });
  await Promise.all(workers.map((w) => w.stop()));
  await Promise.all(conns.map((c) => c.close()));
  ctx.expect(`partitioned.${partitions}`, r.count, total);
  return r;
}
