// The inventory service: endpoints in the group `inventory.v<major>` (setup.ts), run by as many instances as you like
// in one queue group (the Services API's default, "q"), so each request goes to one of them. It is
// found and watched through $SRV.PING / INFO / STATS like any NATS service (`nats micro ls`).
// `npm start` runs one (SERVICE_VERSION, default 1.0.0; WORK_MS simulates that long a piece of work
// per request, default 0); on SIGTERM or SIGINT it stops taking requests, answers the ones in hand
// within STOP_DEADLINE_MS, and exits 0 (the kit's runService).
import type { KV } from "@nats-io/kv";
import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import { delay, type NatsConnection } from "@nats-io/transport-node";
import { ApiCodes, apiCode, intOption, isEntry, type Logger, type Running, runService, stopWithin } from "@repo/kit";
import { priceOf, type Quote, quoteRequest, Refused, type Reservation, reserveRequest } from "./messages.js";
import { groupOf, PRICES, SERVICE, setup } from "./setup.js";

// @nats-io/services' newest release (3.0.0-25) is typed against an older nats-core than the connection
// (3.4): the same connection at run time, two copies of its type.
type SvcmConnection = ConstructorParameters<typeof Svcm>[0];

export interface InventoryOptions {
  nc: NatsConnection;
  kv: KV;
  log: Logger;
  version?: string;
  /** Simulated work per request, in ms (the demo and the tests use it to have requests in flight). */
  workMs?: number;
}

export interface Inventory extends Running {
  /** This instance's id, as discovery shows it. */
  readonly id: string;
  readonly service: Service;
}

/** The first reservation under its id, made now or before (then `duplicate`); never two. */
async function reserveOnce(kv: KV, r: ReturnType<typeof reserveRequest>, by: string): Promise<Reservation> {
  const made: Reservation = { ...r, price_cents: priceOf(r), by, duplicate: false };
  try {
    await kv.create(r.id, JSON.stringify(made));
    return made;
  } catch (err) {
    if (apiCode(err) !== ApiCodes.StreamWrongLastSequence) throw err;
  }
  // The id is taken: by this request's earlier try, or by another request reusing the id.
  const before = (await kv.get(r.id))?.json<Reservation>();
  if (!before) throw new Error(`reservation ${r.id} exists but could not be read`);
  if (before.sku !== r.sku || before.qty !== r.qty) throw new Refused(409, `id ${r.id} is already used for another reservation`);
  return { ...before, duplicate: true };
}

export async function startInventory(o: InventoryOptions): Promise<Inventory> {
  const version = o.version ?? "1.0.0";
  const counts = { answered: 0, refused: 0, failed: 0 };
  const service = await new Svcm(o.nc as unknown as SvcmConnection).add({
    name: SERVICE,
    version,
    description: "prices and reservations",
    // STATS' num_errors counts only what a handler throws before it returns; these count every answer.
    statsHandler: async () => ({ ...counts }),
  });
  const inHand = new Set<Promise<void>>();
  const endpoint = (work: (m: ServiceMsg) => Promise<unknown>) => (err: Error | null, m: ServiceMsg) => {
    if (err) return void o.log.error({ err: err.message }, "endpoint stopped"); // the service stops with it
    const done = (async () => {
      try {
        if (o.workMs) await delay(o.workMs);
        const value = await work(m);
        m.respond(JSON.stringify(value));
        counts.answered++;
        o.log.info({ subject: m.subject }, "answered");
      } catch (e) {
        // A refusal is the caller's to handle (a 4xx code); anything else is ours, and worth a retry.
        const refused = e instanceof Refused;
        refused ? counts.refused++ : counts.failed++;
        if (!refused) o.log.warn({ subject: m.subject, err: String(e) }, "failed; the caller may retry with the same id");
        m.respondError(refused ? e.code : 503, refused ? e.message : "not answered now: try again with the same id");
      }
    })();
    inHand.add(done);
    void done.finally(() => inHand.delete(done));
  };
  const group = service.addGroup(groupOf(version));
  group.addEndpoint("quote", {
    metadata: { takes: '{"sku","qty"}' },
    handler: endpoint(async (m): Promise<Quote> => {
      const r = quoteRequest(m.data);
      return { ...r, price_cents: priceOf(r), version };
    }),
  });
  group.addEndpoint("reserve", {
    metadata: { takes: '{"id","sku","qty"}', idempotent: "by id" },
    handler: endpoint(async (m) => reserveOnce(o.kv, reserveRequest(m.data), service.info().id)),
  });
  // One request, many answers: a message per sku, then an empty one (the sentinel that ends the
  // caller's requestMany). Not in `inHand`: it answers at once.
  group.addEndpoint("catalogue", {
    metadata: { answers: "a message per sku, then an empty one" },
    handler: (err, m) => {
      if (err) return void o.log.error({ err: err.message }, "endpoint stopped");
      for (const [sku, price_cents] of Object.entries(PRICES)) m.respond(JSON.stringify({ sku, price_cents }));
      m.respond();
    },
  });
  // The endpoints' subscriptions are sent, not yet known to the server: a caller on another connection
  // could still get "no responders". A flush is a round trip, so the server has them all after it.
  await o.nc.flush();
  o.log.info({ service: SERVICE, version, id: service.info().id, subjects: `${groupOf(version)}.*` }, "endpoints up");
  return {
    id: service.info().id,
    service,
    // Unsubscribes (draining what the server sent already), then waits for the requests in hand: a
    // connection drained under a handler would drop its answer, and the caller would time out.
    stop: async (deadlineMs) => {
      await service.stop();
      await stopWithin(
        Promise.allSettled([...inHand]).then(() => {}),
        deadlineMs,
        o.log,
      );
    },
    health: async () => ({ version, id: service.info().id, in_hand: inHand.size, ...counts }),
  };
}

if (isEntry(import.meta.url)) {
  runService("request-reply-service", async (nc, log) => {
    const workMs = intOption("WORK_MS", process.env.WORK_MS ?? "0", 0);
    return startInventory({ nc, kv: await setup(nc), log, version: process.env.SERVICE_VERSION, workMs });
  });
}
