// The demo `pnpm run pattern dedup-publish` runs: pipelined idempotent publishing, a retry storm, forced
// timeouts, the window's edge, and the speed of one-at-a-time versus pipelined publishing.

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { delay } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, logSummary, runMain } from "@repo/kit";
import { payment, publishIdempotent, publishPipelined, tally } from "./producer.js";
import { readStored, storedTwice } from "./reader.js";
import { setup } from "./setup.js";

const usage = `usage: pnpm run pattern dedup-publish [--payments N] [--window-ms MS] [--json]
  --payments N     payments to publish (default 2000)
  --window-ms MS   the stream's duplicate_window for the demo (default 2000; the server default is 2 minutes)`;

runMain("dedup-publish", async (_signal, log) => {
  const options = demoOptions(usage, { payments: { default: 2000, min: 10 }, "window-ms": { default: 2000, min: 100 } });
  if (!options) return;
  const { payments: count, "window-ms": windowMs } = options;

  const nc = await connectFromEnv("dedup-demo");
  const js = jetstream(nc);
  await setup(await jetstreamManager(nc), windowMs);
  log.info({ server: nc.info?.version, duplicate_window_ms: windowMs }, "stream PAYMENTS ready");
  const run = Date.now().toString(36);
  const ids = Array.from({ length: count }, (_, i) => `pay-${run}-${i}`);
  const msgs = ids.map((id, i) => payment(id, 100 + i));
  const before = (await readStored(nc)).length;

  // 1. Pipelined: a bounded window of publishes in flight instead of one round trip at a time.
  const half = Math.floor(count / 2);
  let t = performance.now();
  for (const m of msgs.slice(0, 200)) await publishIdempotent(js, m);
  const oneAtATime = 200 / ((performance.now() - t) / 1000);
  t = performance.now();
  const first = tally(await publishPipelined(nc, msgs.slice(200, half), { window: 256 }));
  const pipelined = (half - 200) / ((performance.now() - t) / 1000);
  log.info(
    { one_at_a_time_per_s: Math.round(oneAtATime), pipelined_per_s: Math.round(pipelined), speedup: +(pipelined / oneAtATime).toFixed(1) },
    `published the first ${half} of ${count} payments: 200 one at a time, the rest pipelined`,
  );

  // 2. A retry storm: the same first half again (a producer restarted without knowing what got through).
  const storm = tally(await publishPipelined(nc, msgs.slice(0, half)));
  log.info(storm, "retry storm: every id already stored, each acked as a duplicate");

  // 3. Timeouts: a 1ms ack timeout makes most first attempts give up although the server stored them;
  //    the retries with the same id are acked as duplicates.
  const timed = tally(await publishPipelined(nc, msgs.slice(half), { timeoutMs: 1 }));
  log.info(timed, "second half with 1ms ack timeouts: retried, never stored twice");

  // 4. The window's edge: after duplicate_window the same id is new again.
  const again = await publishIdempotent(js, msgs[0]!);
  await delay(windowMs + 500);
  let after = await publishIdempotent(js, msgs[0]!);
  for (let i = 0; i < 10 && after.duplicate; i++) after = await delay(250).then(() => publishIdempotent(js, msgs[0]!));
  log.info(
    { within_window_duplicate: again.duplicate, after_window_duplicate: after.duplicate },
    `the same id after the ${windowMs}ms window is stored again: ids must be unique for longer than that`,
  );

  const stored = (await readStored(nc)).slice(before);
  const twice = storedTwice(stored.slice(0, -1)); // the last one is the deliberate after-window copy
  const unique = new Set(stored.map((s) => s.id)).size;
  await nc.drain();
  const failed = first.failed + storm.failed + timed.failed;
  const lost = ids.length - unique;
  logSummary(
    log,
    {
      payments: count,
      stored: stored.length,
      unique,
      duplicates_reported: storm.duplicates + timed.duplicates,
      retried: timed.retried,
      failed,
      stored_twice: twice.length,
      lost,
    },
    `summary: payments=${count} stored=${stored.length} (=${count} + 1 after the window) duplicates_reported=${storm.duplicates + timed.duplicates} stored_twice=${twice.length} lost=${lost}`,
  );
  if (lost > 0 || twice.length > 0 || failed > 0 || stored.length !== count + 1) process.exitCode = 1;
});
