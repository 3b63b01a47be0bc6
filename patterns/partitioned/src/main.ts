// The demo `pnpm run pattern partitioned` runs: events of many keys spread over N partitions, read by
// competing workers; one worker is stopped mid-run (its partitions move), then one joins (they
// spread again). The guarantee it checks, from every key's state at the end: each key's events were
// applied in order, each once, none lost. A redelivery (a late or repeated copy) is counted apart:
// at least once allows it, and the state refuses it.
import { jetstreamManager } from "@nats-io/jetstream";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, isNotFound, logSummary, runMain } from "@repo/kit";
import { eventsFor, publishInOrder } from "./producer.js";
import { LEASES, setup, type Timings } from "./setup.js";
import { allStates } from "./state.js";
import { type Handled, startWorker, type Worker } from "./worker.js";

const usage = `usage: pnpm run pattern partitioned [--keys N] [--events N] [--workers N] [--partitions N] [--json]
  --keys N        keys (orders) with events of their own (default 40)
  --events N      events per key (default 15)
  --workers N     competing workers, each on its own connection (default 3)
  --partitions N  partitions of the stream (default 6; fixed once the stream exists)`;

// Short leases so a stopped worker's partitions move in a second or two (production: setup.ts).
const timings: Timings = { leaseMs: 1_500, ackWaitMs: 5_000 };
/** Stands in for real work: 10 ms an event. */
const work = () => delay(10);

runMain("partitioned", async (signal, log) => {
  const options = demoOptions(usage, { keys: 40, events: 15, workers: 3, partitions: 6 });
  if (!options) return;
  const { keys, events: perKey, workers: workerCount, partitions } = options;

  const nc = await connectFromEnv("partitioned-demo");
  const jsm = await jetstreamManager(nc);
  // The demo's leases are short: a leases bucket it makes goes again at the end, for a service's own.
  const madeHere = await jsm.streams.info(`KV_${LEASES}`).then(
    () => false,
    (err: unknown) => (isNotFound(err) ? true : Promise.reject(err)),
  );
  const { state } = await setup(jsm, nc, partitions, timings);
  log.info(
    { server: nc.info?.version, partitions },
    `stream ORDER_EVENTS: order.<key> stored as order.<partition>.<key>, ${partitions} partitions`,
  );

  const handled: Handled[] = [];
  const connections: NatsConnection[] = [];
  const workers: Worker[] = [];
  const start = async (name: string) => {
    const wnc = await connectFromEnv(`partitioned-${name}`);
    connections.push(wnc);
    workers.push(await startWorker({ nc: wnc, name, partitions, timings, log, work, onHandled: (h) => void handled.push(h) }));
  };
  for (let i = 1; i <= workerCount; i++) await start(`worker-${i}`);
  const holding = () => Object.fromEntries(workers.map((w) => [w.name, w.held()]));
  const allHeld = () => workers.reduce((n, w) => n + w.held().length, 0) === partitions;
  await until(allHeld);
  log.info(holding(), "partitions held: each worker reads its own, one event in flight per partition");

  const run = Date.now().toString(36);
  const byKey = eventsFor(keys, perKey, `order-${run}`);
  const total = keys * perKey;
  const publishing = publishInOrder(nc, byKey);
  const applied = () => handled.filter((h) => h.result === "applied").length;
  await until(() => applied() >= total / 4 || signal.aborted);
  if (workers.length > 1 && !signal.aborted) {
    const leaving = workers.shift()!;
    log.info(
      { worker: leaving.name, held: leaving.held() },
      "a worker stops mid-run: it finishes its event in hand and gives its partitions up",
    );
    await leaving.stop();
    await until(() => allHeld() || signal.aborted);
    log.info(holding(), "the others took its partitions");
    await start(`worker-${workerCount + 1}`);
    log.info(`worker-${workerCount + 1} joins: the others give it their extra partitions`);
    await until(() => workers.every((w) => w.held().length >= Math.floor(partitions / workers.length)) || signal.aborted);
    log.info(holding(), "spread again");
  }
  const published = await publishing;
  await until(() => applied() >= published.stored || signal.aborted, 60_000);

  await Promise.all(workers.map((w) => w.stop()));
  await Promise.all(connections.map((c) => c.drain()));
  const states = await allStates(state);
  if (madeHere) await jsm.streams.delete(`KV_${LEASES}`);
  await nc.drain();

  // A key's state records the last event applied; applied in order means every seq came once, ascending.
  let outOfOrder = 0;
  const lastSeq = new Map<string, number>();
  for (const h of handled.filter((x) => x.result === "applied")) {
    if (h.event.seq !== (lastSeq.get(h.event.key) ?? 0) + 1) outOfOrder++;
    lastSeq.set(h.event.key, h.event.seq);
  }
  const mine = byKey.map((events) => events[0]!.key);
  // Published and not applied: every event of a key up to what was published is in its state.
  const lost = mine.reduce((n, key) => n + perKey - (states.get(key)?.seq ?? 0), 0) - published.unpublished;
  const summary = {
    published: published.stored,
    applied: applied(),
    redelivered: handled.filter((h) => h.result === "already").length,
    out_of_order: outOfOrder,
    ended_out_of_order: handled.filter((h) => h.result === "gap").length,
    lost,
    keys,
    partitions,
  };
  logSummary(
    log,
    summary,
    `summary: published=${summary.published} applied=${summary.applied} redelivered=${summary.redelivered} out_of_order=${outOfOrder} lost=${lost}${signal.aborted ? " (stopped by Ctrl-C: the rest stays queued)" : ""}`,
  );
  if (outOfOrder > 0 || summary.ended_out_of_order > 0 || (lost > 0 && !signal.aborted) || published.failed.length > 0)
    process.exitCode = 1;
});

/** Waits until `done` holds, at most `ms`. */
async function until(done: () => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await delay(50);
}
