// The demo `pnpm run pattern ordered-replay` runs: replay a ledger from the start, from a sequence,
// from a time, for a subject filter; stop a replayer and resume it; follow live appends.

import { jetstreamManager } from "@nats-io/jetstream";
import { delay } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, logSummary, runMain } from "@repo/kit";
import { appendEvents, ledgerEvents } from "./producer.js";
import { type Entry, loadPosition, type ReplayOptions, replay } from "./replayer.js";
import { STREAM, setup } from "./setup.js";

const usage = `usage: pnpm run pattern ordered-replay [--events N] [--json]
  --events N    events to append before replaying (default 1000)`;

/** Out-of-order steps and, for an unfiltered replay, missing sequences. */
function check(seqs: number[], contiguous: boolean) {
  let outOfOrder = 0;
  let gaps = 0;
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i]! <= seqs[i - 1]!) outOfOrder++;
    else if (contiguous && seqs[i] !== seqs[i - 1]! + 1) gaps++;
  }
  return { outOfOrder, gaps };
}

runMain("ordered-replay", async (signal, log) => {
  const options = demoOptions(usage, { events: { default: 1000, min: 10 } });
  if (!options) return;
  const count = options.events;

  const nc = await connectFromEnv("ordered-replay-demo");
  const jsm = await jetstreamManager(nc);
  const positions = await setup(jsm, nc);
  const run = Date.now().toString(36);
  let problems = 0;
  const collect = async (
    what: string,
    opts: Omit<ReplayOptions, "nc" | "log" | "handler" | "name"> & { name?: string },
    contiguous = true,
  ) => {
    const seqs: number[] = [];
    const res = await replay({
      nc,
      log,
      name: opts.name ?? `${what}-${run}`,
      handler: (e: Entry) => void seqs.push(e.seq),
      signal,
      ...opts,
    });
    const c = check(seqs, contiguous);
    problems += c.gaps + c.outOfOrder;
    log.info(
      {
        events: res.count,
        first: res.first,
        last: res.last,
        gaps: c.gaps,
        out_of_order: c.outOfOrder,
        client_side_filter: res.clientSideFilter || undefined,
      },
      what,
    );
    return { seqs, res };
  };

  const seqsA = await appendEvents(nc, ledgerEvents(count));
  await delay(50);
  const since = new Date();
  await delay(50);
  const seqsB = await appendEvents(nc, ledgerEvents(Math.ceil(count / 5), 4, count));
  log.info({ server: nc.info?.version, appended: seqsA.length + seqsB.length, stream: STREAM }, "ledger written");

  const all = await collect("replay from the start", { from: "start" });
  const mid = seqsA[Math.floor(seqsA.length / 2)]!;
  await collect(`replay from sequence ${mid}`, { from: { seq: mid } });
  const fromTime = await collect(`replay from a time (${since.toISOString()})`, { from: { time: since } });
  if (fromTime.seqs[0] !== seqsB[0]) problems++;
  await collect("replay of one account (ledger.acct-1.>)", { from: "start", filter: ["ledger.acct-1.>"] }, false);
  await collect(
    "replay of two filters (ledger.acct-1.>, ledger.acct-2.debit)",
    { from: "start", filter: ["ledger.acct-1.>", "ledger.acct-2.debit"] },
    false,
  );

  // Resume: a projector stops part-way (as if redeployed), then picks up at the next sequence.
  const projector = `projector-${run}`;
  const halfway = new AbortController();
  let seen = 0;
  await replay({
    nc,
    log,
    name: projector,
    positions,
    from: "resume",
    checkpointEvery: 50,
    signal: halfway.signal,
    handler: () => void (++seen === 300 && halfway.abort()),
  });
  const saved = await loadPosition(positions, projector);
  const resumed = await collect("projector resumed from its saved position", { name: projector, positions, from: "resume" });
  log.info({ saved_position: saved, resumed_at: resumed.seqs[0] }, "resume continues at exactly the next sequence");
  if (resumed.seqs[0] !== saved + 1) problems++;

  // Follow: a live replay sees events appended while it runs, in order.
  const live = new AbortController();
  const followed: number[] = [];
  const following = replay({
    nc,
    log,
    name: `live-${run}`,
    from: { seq: all.res.last! + 1 },
    follow: true,
    signal: live.signal,
    handler: (e) => void followed.push(e.seq),
  });
  const appended = await appendEvents(nc, ledgerEvents(200, 4, 10_000), 20);
  for (let i = 0; i < 100 && followed.length < appended.length; i++) await delay(50);
  live.abort();
  await following;
  const c = check(followed, true);
  problems += c.gaps + c.outOfOrder + (followed.length === appended.length ? 0 : 1);
  log.info(
    { appended: appended.length, followed: followed.length, gaps: c.gaps, out_of_order: c.outOfOrder },
    "live follow while appending",
  );

  await positions.delete(projector);
  await nc.drain();
  const replayed = new Set([...all.seqs, ...followed]);
  const lost = [...seqsA, ...seqsB, ...appended].filter((seq) => !replayed.has(seq)).length;
  logSummary(
    log,
    { replayed: all.res.count, resumed_at: resumed.seqs[0], saved_position: saved, followed: followed.length, problems, lost },
    `summary: replayed=${all.res.count} resumed_at=${resumed.seqs[0]} (position ${saved}) followed=${followed.length}/${appended.length} gaps_or_out_of_order=${problems} lost=${lost}`,
  );
  if (problems > 0 || lost !== 0) process.exitCode = 1;
});
