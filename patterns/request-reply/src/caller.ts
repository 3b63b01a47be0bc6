// How a caller uses the service: a request with a timeout, a service error back as a typed error
// (ServiceError, its code from Nats-Service-Error-Code), a reservation sent again with the same id
// after a timeout, and scatter-gather with requestMany.
import { ServiceError } from "@nats-io/services";
import { backoff, delay, Empty, type Msg, type NatsConnection, type RequestManyOptions } from "@nats-io/transport-node";
import { connectFromEnv, intOption, isEntry, isNoResponders, isTimeout, runMain } from "@repo/kit";
import type { Quote, QuoteRequest, Reservation, ReserveRequest } from "./messages.js";
import { subjectOf } from "./setup.js";

/** The answer to `body`, or a ServiceError (the service refused), TimeoutError or NoRespondersError. */
export async function call<T>(nc: NatsConnection, subject: string, body: unknown, timeoutMs = 2_000): Promise<T> {
  const m = await nc.request(subject, JSON.stringify(body), { timeout: timeoutMs });
  const refused = ServiceError.toServiceError(m as unknown as Parameters<typeof ServiceError.toServiceError>[0]);
  if (refused) throw refused;
  return m.json<T>();
}

export const quote = (nc: NatsConnection, r: QuoteRequest, major = "1", timeoutMs?: number) =>
  call<Quote>(nc, subjectOf("quote", major), r, timeoutMs);

/** Worth sending again with the same id: no answer in time, nobody listening yet, or the service's 503. */
export const worthRetrying = (err: unknown): boolean =>
  isTimeout(err) || isNoResponders(err) || (err instanceof ServiceError && err.code >= 500);

/**
 * A reservation, made once however often it is sent: a timeout does not say whether it was made (the
 * answer may be what was lost), so it is sent again with the same id, and the service answers a
 * repeat with the first reservation (`duplicate: true`). A 4xx refusal is final.
 */
export async function reserve(
  nc: NatsConnection,
  r: ReserveRequest,
  { timeoutMs = 2_000, tries = 4, major = "1" } = {},
): Promise<{ reservation: Reservation; tries: number }> {
  const waits = backoff([100, 500, 1_000]);
  for (let t = 1; ; t++) {
    try {
      return { reservation: await call<Reservation>(nc, subjectOf("reserve", major), r, timeoutMs), tries: t };
    } catch (err) {
      if (!worthRetrying(err) || t >= tries) throw err;
      await delay(waits.backoff(t));
    }
  }
}

/**
 * Scatter-gather: every answer to one request, gathered until `how` says stop: `count` (this many
 * answers), `stall` (none for `stall` ms after the first), `sentinel` (an empty answer) or `timer`
 * (`maxWait` ms), each at most `maxWait` ms.
 */
export async function gather(nc: NatsConnection, subject: string, how: Partial<RequestManyOptions>, body?: unknown): Promise<Msg[]> {
  const answers: Msg[] = [];
  const replies = await nc.requestMany(subject, body === undefined ? Empty : JSON.stringify(body), { maxWait: 2_000, ...how });
  for await (const m of replies) if (m.data.length > 0) answers.push(m);
  return answers;
}

// `tsx src/caller.ts N`: N reservations with new ids (a feed for the service's tests), each sent
// again on a timeout; exits 1 unless every one was answered.
if (isEntry(import.meta.url)) {
  runMain("request-reply-caller", async (_signal, log) => {
    const n = intOption("N", process.argv[2] ?? "10");
    const nc = await connectFromEnv("request-reply-caller");
    const run = Date.now().toString(36);
    let answered = 0;
    for (let i = 0; i < n; i++) {
      const { reservation, tries } = await reserve(nc, { id: `r-${run}-${i}`, sku: "apple", qty: 1 + (i % 5) });
      answered++;
      log.info({ id: reservation.id, by: reservation.by, tries, duplicate: reservation.duplicate }, "reserved");
    }
    await nc.drain();
    log.info({ asked: n, answered }, `summary: asked=${n} answered=${answered}`);
    if (answered !== n) process.exitCode = 1;
  });
}
