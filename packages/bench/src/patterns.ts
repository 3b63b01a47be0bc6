// One benchmark for each pattern not measured elsewhere (the publisher is dedup-publish's, the work
// queue has its own), each reported as a ratio of the matching limit measured in the same run.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createLogger } from "../../../patterns/fanout/src/nats.js";
import { startSubscriber } from "../../../patterns/fanout/src/consumer.js";
import { orderEvents, publishEvents } from "../../../patterns/fanout/src/producer.js";
import { CONSUMERS, setup as fanoutSetup, streams } from "../../../patterns/fanout/src/setup.js";
import { appendEvents, ledgerEvents } from "../../../patterns/ordered-replay/src/producer.js";
import { replay } from "../../../patterns/ordered-replay/src/replayer.js";
import { setup as ledgerSetup, STREAM as LEDGER } from "../../../patterns/ordered-replay/src/setup.js";
import { publishTasks, type Task } from "../../../patterns/priority-queue/src/producer.js";
import { LEVELS, setup as tasksSetup, STREAM as TASKS } from "../../../patterns/priority-queue/src/setup.js";
import { startWorker as startPriorityWorker } from "../../../patterns/priority-queue/src/worker.js";
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
      const subs = await Promise.all(CONSUMERS.map((name) => startSubscriber({ nc: ctx.nc, retention: "limits", name, log, onEvent: () => void (++received === want && allIn()) })));
      await within(done, 300_000);
      await Promise.all(subs.map((s) => s.stop()));
      return received;
    });
    rss.push(rssMb());
    ctx.expect("fanout", r.count, want);
    ctx.record({ name: "fanout", what: `${CONSUMERS.length} durable consumers each read and ack the backlog (deliveries/s)`, ...r, ratioOf: "consume.ack", rssMb: rss });
  }

  // ordered-replay: the replayer (ordered consumer, position checkpoints) over the whole ledger.
  {
    const jsm = await deleteStreams(ctx, [LEDGER]);
    const positions = await ledgerSetup(jsm, ctx.nc);
    await appendEvents(ctx.nc, ledgerEvents(ctx.n));
    const rss = [rssMb()];
    const r = await timed(async () => (await replay({ nc: ctx.nc, log, name: "bench", positions, from: "start", checkpointEvery: 1_000, handler: () => {} })).count);
    rss.push(rssMb());
    ctx.expect("ordered-replay", r.count, ctx.n);
    ctx.record({ name: "ordered-replay", what: "the replayer from the start, checkpoint every 1,000", ...r, ratioOf: "consume.ordered", rssMb: rss });
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
      const workers = await Promise.all(conns.map((nc, i) => startPriorityWorker({ nc, name: `p${i}`, log, handler: async () => {}, onDone: () => void (++handled === count && allDone()) })));
      await within(done, 300_000);
      await Promise.all(workers.map((w) => w.stop()));
      return handled;
    });
    rss.push(rssMb());
    await Promise.all(conns.map((c) => c.close()));
    ctx.expect("priority-queue", r.count, count);
    ctx.record({ name: "priority-queue", what: "4 workers drain a backlog over 3 levels (subjects per level, no_wait pulls)", ...r, ratioOf: "consume.ack", rssMb: rss });
  }
}
