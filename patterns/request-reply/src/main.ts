// The demo `pnpm run pattern request-reply` runs: three instances of the inventory service, found by
// discovery; a load spread over them; refusals as typed errors; reservations sent twice and made
// once; a rolling deploy under load; and what a caller gets when nobody is serving.
import { ServiceError, Svcm } from "@nats-io/services";
import { connect, delay, type NatsConnection } from "@nats-io/transport-node";
import { connectFromEnv, demoOptions, isNoResponders, logSummary, optionsFromEnv, runMain } from "@repo/kit";
import { call, quote, reserve } from "./caller.js";
import type { Reservation } from "./messages.js";
import { type Inventory, startInventory } from "./service.js";
import { SERVICE, setup, subjectOf } from "./setup.js";

const usage = `usage: pnpm run pattern request-reply [--requests N] [--work-ms MS] [--json]
  --requests N   quotes to ask for across the instances (default 600)
  --work-ms MS   simulated work per request in each instance (default 5)`;

runMain("request-reply", async (signal, log) => {
  const options = demoOptions(usage, { requests: { default: 600, min: 10 }, "work-ms": { default: 5, min: 0 } });
  if (!options) return;
  const { requests, "work-ms": workMs } = options;
  const nc = await connectFromEnv("request-reply-demo");
  const kv = await setup(nc);
  const connections: NatsConnection[] = [];
  // Each instance on a connection of its own, as separate processes would be.
  const start = async (version: string) => {
    const own = await connect(optionsFromEnv(`inventory-${version}`));
    connections.push(own);
    // Quiet: a line per request would drown the narration (the service itself logs one each).
    const quiet = log.child({ instance: connections.length }, { level: "warn" });
    return startInventory({ nc: own, kv, log: quiet, version, workMs });
  };
  const v1: Inventory[] = [];
  for (let i = 0; i < 3; i++) v1.push(await start("1.0.0"));
  const client = new Svcm(nc as never).client();
  const found: string[] = [];
  for await (const p of await client.ping(SERVICE)) found.push(`${p.id} ${p.version}`);
  log.info({ found }, `discovery ($SRV.PING.${SERVICE}) found ${found.length} instances`);

  // 1. A load spread over the queue group, 32 requests in flight at a time.
  let t = performance.now();
  let answered = 0;
  for (let i = 0; i < requests && !signal.aborted; i += 32)
    answered += (await Promise.all(Array.from({ length: Math.min(32, requests - i) }, () => quote(nc, { sku: "pear", qty: 2 })))).length;
  const perS = Math.round(answered / ((performance.now() - t) / 1000));
  const shares: Record<string, number> = {};
  for await (const s of await client.stats(SERVICE)) shares[s.id] = s.endpoints?.find((e) => e.name === "quote")?.num_requests ?? 0;
  log.info({ answered, per_s: perS, shares }, `${answered} quotes answered, spread over the instances (STATS)`);

  // 2. Refusals come back as typed errors, with the code the service chose.
  const refusal = await quote(nc, { sku: "kiwi", qty: 1 }).catch((e: unknown) => e);
  const refused = refusal instanceof ServiceError ? 1 : 0;
  log.info({ code: (refusal as ServiceError).code, error: (refusal as Error).message }, "an unknown sku: a ServiceError, not a timeout");

  // 3. Reservations, each sent twice (as after a timeout whose answer was lost): made once each.
  const run = Date.now().toString(36);
  const reservations = Math.max(10, Math.floor(requests / 10));
  let duplicates = 0;
  const made = new Set<string>();
  for (let i = 0; i < reservations && !signal.aborted; i++) {
    const r = { id: `demo-${run}-${i}`, sku: "apple", qty: 1 + (i % 3) };
    const first = await call<Reservation>(nc, subjectOf("reserve"), r);
    const again = (await reserve(nc, r)).reservation;
    if (again.duplicate && again.by === first.by) duplicates++;
    made.add(first.id);
  }
  let stored = 0;
  for await (const k of await kv.keys()) if (k.startsWith(`demo-${run}-`)) stored++;
  log.info({ reservations, sent: 2 * reservations, stored, duplicates }, "every reservation sent twice, made once (its id is the key)");

  // 4. A rolling deploy under load: 1.1.0 starts beside 1.0.0, then each 1.0.0 stops (drains).
  let failed = 0;
  const versions = new Map<string, number>();
  let loading = true;
  const load = (async () => {
    for (let i = 0; loading && i < 100_000; i++)
      await quote(nc, { sku: "plum", qty: 1 }).then(
        (q) => versions.set(q.version, (versions.get(q.version) ?? 0) + 1),
        () => failed++,
      );
  })();
  const answeredSoFar = () => [...versions.values()].reduce((a, b) => a + b, 0) + failed;
  const more = async (n: number) => {
    for (const until = answeredSoFar() + n; answeredSoFar() < until && !signal.aborted; ) await delay(10);
  };
  t = performance.now();
  await more(100);
  const v11 = [await start("1.1.0"), await start("1.1.0")];
  for (const i of v1) {
    await more(100);
    await i.stop(5_000);
  }
  await more(100);
  loading = false;
  await load;
  log.info(
    { answered_by: Object.fromEntries(versions), failed, ms: Math.round(performance.now() - t) },
    "rolled 1.0.0 to 1.1.0 under load: the old instances drained, no request lost",
  );

  // 5. Nobody serving: the caller knows at once (no responders), rather than after its timeout.
  for (const i of v11) await i.stop(5_000);
  const nobody = await quote(nc, { sku: "plum", qty: 1 }).catch((e: unknown) => e);
  log.info({ no_responders: isNoResponders(nobody) }, "every instance stopped: a request fails at once with no responders");

  for (const c of connections) await c.drain();
  await nc.drain();
  // Lost: a request of the rollout that got no answer, or a reservation answered but not kept.
  const lost = failed + (reservations - stored);
  logSummary(
    log,
    { quotes: answered, per_s: perS, refused, reservations, stored, duplicates_answered: duplicates, rollout_failed: failed, lost },
    `summary: quotes=${answered} refused=${refused} reservations=${reservations} stored=${stored} duplicates_answered=${duplicates} rollout_failed=${failed} lost=${lost}`,
  );
  if (signal.aborted) return;
  if (lost > 0 || duplicates !== reservations || answered !== requests || !isNoResponders(nobody)) process.exitCode = 1;
});
