// The demo `pnpm run pattern event-sourcing` runs: open two accounts, race writers withdrawing from one
// (each append expects the account's last event: a loser retries on fresh state, the balance never
// goes below zero), a withdrawal with a fee (two events, stored together), a snapshot and a rebuild
// from it, and the projection of every balance, checked against the aggregates.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connectFromEnv, demoOptions, logSummary, runMain } from "@repo/kit";
import type { Account, Command } from "./account.js";
import { readBalance, startProjection } from "./projection.js";
import { STREAM, setup } from "./setup.js";
import { execute, load, rebuild, saveSnapshot } from "./store.js";

const usage = `usage: pnpm run pattern event-sourcing [--writers N] [--withdrawals N] [--json]
  --writers N       writers racing on one account (default 6)
  --withdrawals N   withdrawals of 40 each writer tries, from a balance of 1000 (default 10)`;

runMain("event-sourcing", async (_signal, log) => {
  const options = demoOptions(usage, { writers: 6, withdrawals: 10 });
  if (!options) return;
  const nc = await connectFromEnv("event-sourcing-demo");
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const stores = await setup(jsm, nc);
  log.info(
    { server: nc.info?.version, atomic_batches: stores.atomic },
    stores.atomic
      ? `stream ${STREAM}: one subject per account; a command's events are stored as an atomic batch`
      : `stream ${STREAM}: one subject per account; atomic batches need nats-server >= 2.12, so a command's events are stored as one commit message`,
  );
  const run = Date.now().toString(36);
  const [a, b] = [`a-${run}`, `b-${run}`];
  let n = 0;
  const id = () => `${run}-${n++}`;
  const run1 = (c: Command) => execute(js, jsm, stores.atomic, c);
  for (const account of [a, b]) {
    await run1({ kind: "open", id: id(), account, owner: "demo" });
    await run1({ kind: "deposit", id: id(), account, amount: 1_000 });
  }

  // Writers race on account a: every append expects a's last event; losers reload and decide again.
  const tries = Array.from({ length: options.writers }, () => Array.from({ length: options.withdrawals }, () => id()));
  const results = await Promise.all(
    tries.map(async (ids) => {
      const out = [];
      let known: Account | undefined; // each writer keeps the state it saw last and reads only what is new
      for (const cid of ids) {
        const r = await execute(js, jsm, stores.atomic, { kind: "withdraw", id: cid, account: a, amount: 40 }, { known });
        out.push({ id: cid, ...r });
        known = r.state;
      }
      return out;
    }),
  );
  const all = results.flat();
  const accepted = all.filter((r) => r.accepted).map((r) => r.id);
  const conflicts = all.reduce((sum, r) => sum + r.conflicts, 0);
  const stateA = (await load(js, jsm, a)).state;
  log.info(
    {
      account: a,
      tried: all.length,
      accepted: accepted.length,
      rejected: all.length - accepted.length,
      conflicts_retried: conflicts,
      balance: stateA.balance,
    },
    `${options.writers} writers raced to withdraw 40 at a time from account ${a} (1000 deposited): ${accepted.length} accepted, its balance ${stateA.balance}`,
  );

  // Two events of one command, stored together: all or nothing.
  const fee = await run1({ kind: "withdraw", id: id(), account: b, amount: 100, fee: 5 });
  log.info(
    { account: b, accepted: fee.accepted, events: fee.accepted ? fee.events : 0 },
    `account ${b}: a withdrawal of 100 with a fee of 5, withdrawn + fee_charged, stored together`,
  );

  // A snapshot, more events, and a rebuild from snapshot + tail.
  await saveSnapshot(stores.snapshots, b, (await load(js, jsm, b)).state);
  for (let i = 0; i < 5; i++) await run1({ kind: "deposit", id: id(), account: b, amount: 10 });
  const full = (await load(js, jsm, b)).state;
  const fromSnapshot = await rebuild(js, jsm, stores.snapshots, b);
  const rebuiltEqual = JSON.stringify(full) === JSON.stringify(fromSnapshot);
  log.info(
    { account: b, full, from_snapshot: fromSnapshot },
    `account ${b} (1000 - 105 + 5 deposits of 10 = ${full.balance}) rebuilt from its snapshot plus the later events: the same state`,
  );

  // The projection catches up and must agree with the aggregates.
  const projection = await startProjection({ nc, balances: stores.balances, log });
  const finalA = await load(js, jsm, a);
  for (let i = 0; i < 100; i++) {
    const [pa, pb] = [await readBalance(stores.balances, a), await readBalance(stores.balances, b)];
    if (pa.seq === finalA.state.version && pb.seq === full.version) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await projection.stop();
  const [projA, projB] = [await readBalance(stores.balances, a), await readBalance(stores.balances, b)];
  await nc.drain();

  const stored = finalA.commands.filter((c) => accepted.includes(c));
  const lost = accepted.filter((c) => !stored.includes(c)).length;
  const twice = stored.length - new Set(stored).size;
  const projectionEqual = projA.balance === finalA.state.balance && projB.balance === full.balance;
  const summary = {
    account: a,
    withdrawals_tried: all.length,
    accepted: accepted.length,
    conflicts_retried: conflicts,
    balance: finalA.state.balance,
    never_negative: finalA.state.balance >= 0 && finalA.state.balance === 1_000 - 40 * accepted.length,
    atomic_batches: stores.atomic,
    rebuilt_equal: rebuiltEqual,
    projection_equal: projectionEqual,
    stored_twice: twice,
    lost,
  };
  logSummary(
    log,
    summary,
    `summary: account ${a} accepted=${accepted.length}/${all.length} conflicts_retried=${conflicts} balance=${summary.balance} never_negative=${summary.never_negative} rebuilt_equal=${rebuiltEqual} projection_equal=${projectionEqual} lost=${lost}`,
  );
  if (lost > 0 || twice > 0 || !summary.never_negative || !rebuiltEqual || !projectionEqual) process.exitCode = 1;
});
