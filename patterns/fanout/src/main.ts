// The demo `pnpm run pattern fanout` runs: the same order events into a Limits and an Interest
// stream, three independent consumers on each, then a late joiner, then a consumer that was down.

import { jetstreamManager } from "@nats-io/jetstream";
import { delay } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, logSummary, runMain, type Serving } from "@repo/kit";
import { type Received, startSubscriber } from "./consumer.js";
import { orderEvents, publishEvents } from "./producer.js";
import { addConsumer, CONSUMERS, type Retention, setup, streams } from "./setup.js";

const usage = `usage: pnpm run pattern fanout [--orders N] [--json]
  --orders N    orders to publish, 3 events each (default 30)`;

runMain("fanout", async (signal, log) => {
  const options = demoOptions(usage, { orders: 30 });
  if (!options) return;
  const { orders } = options;

  const nc = await connectFromEnv("fanout-demo");
  const jsm = await jetstreamManager(nc);
  await setup(jsm);
  log.info(
    { server: nc.info?.version },
    `streams ${streams.limits.name} (limits) and ${streams.interest.name} (interest), consumers ${CONSUMERS.join(", ")} on each`,
  );

  // Per stream and consumer: which events arrived, how often.
  const got = new Map<string, Map<string, number>>();
  const onEvent = (r: Received, retention: Retention) => {
    const key = `${retention}/${r.consumer}`;
    const seen = got.get(key) ?? new Map<string, number>();
    const id = `${r.event.orderId}-${r.event.type}`;
    got.set(key, seen.set(id, (seen.get(id) ?? 0) + 1));
  };
  const start = (retention: Retention, name: string) =>
    startSubscriber({
      nc,
      retention,
      name,
      log,
      onEvent: (r) => onEvent(r, retention),
      handler: name === "analytics" ? async () => void (await delay(3)) : undefined, // analytics is the slow one
    });
  const waitAll = async (want: number, keys: string[]) => {
    const deadline = Date.now() + 30_000;
    while (keys.some((k) => (got.get(k)?.size ?? 0) < want) && Date.now() < deadline && !signal.aborted) await delay(100);
  };

  const run = Date.now().toString(36);
  const events = orderEvents(orders, run);
  const subs: Serving[] = [];
  for (const r of ["limits", "interest"] as const) for (const name of CONSUMERS) subs.push(await start(r, name));
  await publishEvents(nc, events);
  log.info({ events: events.length }, "published every event to both streams");
  const everyone = (["limits", "interest"] as const).flatMap((r) => CONSUMERS.map((c) => `${r}/${c}`));
  await waitAll(events.length, everyone);
  for (const k of everyone) log.info({ consumer: k, events: got.get(k)?.size ?? 0 }, "consumer caught up at its own pace");
  const kept = async (r: Retention) => (await jsm.streams.info(streams[r].name)).state.messages;
  log.info(
    { limits: await kept("limits"), interest: await kept("interest") },
    "events still stored once every consumer acked: limits keeps history, interest frees it",
  );

  // A late joiner: on Limits it replays the history; on Interest nothing is left to replay.
  for (const r of ["limits", "interest"] as const) {
    await addConsumer(jsm, r, `audit-${run}`);
    subs.push(await start(r, `audit-${run}`));
  }
  await waitAll(events.length, [`limits/audit-${run}`]);
  await delay(300);
  const lateJoiner = { limits: got.get(`limits/audit-${run}`)?.size ?? 0, interest: got.get(`interest/audit-${run}`)?.size ?? 0 };
  log.info(lateJoiner, "late joiner 'audit' replayed");

  // A consumer that is down keeps its events on the Interest stream until it comes back.
  const analytics = subs[CONSUMERS.length + CONSUMERS.indexOf("analytics")]!;
  await analytics.stop();
  const more = orderEvents(5, `${run}-late`);
  await publishEvents(nc, more, ["interest"]);
  await delay(500);
  log.info({ stored: await kept("interest") }, "analytics is down: its unread events stay in the interest stream");
  subs.push(await start("interest", "analytics"));
  await waitAll(events.length + more.length, ["interest/analytics"]);
  await delay(200);
  log.info({ stored: await kept("interest") }, "analytics came back and caught up: the interest stream is empty again");

  await Promise.all(subs.map((s) => s.stop()));
  // The audit consumers were for show: on an Interest stream a forgotten consumer would hold every event.
  for (const r of ["limits", "interest"] as const) await jsm.consumers.delete(streams[r].name, `audit-${run}`);
  await nc.drain();
  const dup = [...got.values()].reduce((n, m) => n + [...m.values()].filter((c) => c > 1).length, 0);
  const lost = everyone.reduce(
    (n, k) => n + Math.max(0, (k === "interest/analytics" ? events.length + more.length : events.length) - (got.get(k)?.size ?? 0)),
    0,
  );
  const summary = {
    events: events.length,
    consumers: everyone.length,
    late_joiner_limits: lateJoiner.limits,
    late_joiner_interest: lateJoiner.interest,
    lost,
    duplicates: dup,
  };
  logSummary(
    log,
    summary,
    `summary: events=${events.length} consumers=${everyone.length} each_got_all=${lost === 0} late_joiner_replayed=${lateJoiner.limits}/${lateJoiner.interest} (limits/interest) lost=${lost} duplicates=${dup}`,
  );
  if (lost > 0 || dup > 0) process.exitCode = 1;
});
