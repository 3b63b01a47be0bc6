// The server's limits, measured with the least client code that does the job, so the patterns can be
// reported as a ratio of them: ingest (publish with a reply subject on one shared inbox, count the
// acks) and consumption (an ordered consumer replaying; a durable consumer with explicit acks).
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, createInbox, headers, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { createPublisher } from "@repo/kit";
import { type Sample, timed, within } from "./measure.js";

export const PAYLOAD = new Uint8Array(128).fill(120); // 128 bytes of "x"

/** A fresh file-backed stream on `subject.>`. */
export async function freshStream(
  nc: NatsConnection,
  name: string,
  subjects: string[],
  retention: "limits" | "workqueue" = "limits",
): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(name).catch(() => undefined);
  await jsm.streams.add({ name, subjects, retention: retention as never, storage: "file" as never });
}

/**
 * Publishes `count` messages with a reply subject on one shared inbox, at most `window` unacked,
 * and counts the acks without matching them: what the server can ingest. With `ids`, each message
 * carries a Nats-Msg-Id (the server then checks it against the duplicate window). With `spread`, the
 * replies go to that many subjects under the inbox, round robin, as a publisher that matches each ack
 * to its message by its reply subject needs (one per message in flight): the server then matches
 * many subjects, not one.
 */
export async function rawIngest(
  nc: NatsConnection,
  subject: string,
  count: number,
  window: number,
  ids: boolean,
  spread = 0,
): Promise<number> {
  const inbox = createInbox();
  const replies = spread > 0 ? Array.from({ length: spread }, (_, i) => `${inbox}.${i}`) : [inbox];
  let acked = 0;
  let wake: (() => void) | undefined;
  const sub = nc.subscribe(spread > 0 ? `${inbox}.*` : inbox, {
    callback: () => {
      acked++;
      wake?.();
    },
  });
  const run = Date.now().toString(36);
  for (let sent = 0; sent < count; sent++) {
    while (sent - acked >= window) await new Promise<void>((r) => (wake = r));
    let h: MsgHdrs | undefined;
    if (ids) {
      h = headers();
      h.set("Nats-Msg-Id", `${run}-${sent}`);
    }
    nc.publish(subject, PAYLOAD, { reply: replies[sent % replies.length], headers: h });
  }
  const deadline = Date.now() + 30_000;
  while (acked < count && Date.now() < deadline)
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 100);
    });
  sub.unsubscribe();
  return acked;
}

/** `await js.publish()` with `window` publishes in flight (independent lanes). */
export async function jsPublish(nc: NatsConnection, subject: string, count: number, window: number): Promise<number> {
  const js = jetstream(nc);
  const run = Date.now().toString(36);
  let next = 0;
  let stored = 0;
  const lane = async () => {
    while (next < count) {
      const i = next++;
      await js.publish(subject, PAYLOAD, { msgID: `${run}-${i}` });
      stored++;
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  return stored;
}

/** Reads the whole stream with an ordered consumer (no acks): the replay ceiling. */
export async function orderedReplay(nc: NatsConnection, stream: string, count: number): Promise<number> {
  const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume();
  let seen = 0;
  for await (const _m of messages) if (++seen >= count) break;
  await messages.close();
  return seen;
}

/** A durable consumer with explicit acks read with consume() and m.ack(): the ack ceiling. */
export async function consumeAck(nc: NatsConnection, stream: string, count: number): Promise<number> {
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(stream, { durable_name: "ceiling", ack_policy: AckPolicy.Explicit });
  const consumer = await jetstream(nc).consumers.get(stream, "ceiling");
  const messages = await consumer.consume();
  let seen = 0;
  for await (const m of messages) {
    m.ack();
    if (++seen >= count) break;
  }
  await messages.close();
  await nc.flush();
  await jsm.consumers.delete(stream, "ceiling");
  return seen;
}

/**
 * The work-queue ceiling end to end: the patterns' publisher fills a WorkQueue stream while `workers`
 * connections each run the plainest consumer (consume() + ack(), `perWorker` pulled at a time: the
 * same number of jobs in hand as the pattern's workers) on one durable. The work-queue
 * pattern adds retries, DLQ, heartbeats and bounded concurrency on top of this.
 */
export async function queueCeiling(nc: NatsConnection, url: string, count: number, workers: number, perWorker: number): Promise<Sample> {
  await freshStream(nc, "CEILING_Q", ["ceilq.>"], "workqueue");
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add("CEILING_Q", { durable_name: "workers", ack_policy: AckPolicy.Explicit, max_ack_pending: 1_000 });
  const conns = await Promise.all(Array.from({ length: workers }, () => connect({ servers: url })));
  let seen = 0;
  let allSeen: () => void = () => {};
  const done = new Promise<void>((r) => (allSeen = r));
  const loops = conns.map(async (c) => {
    const messages = await (await jetstream(c).consumers.get("CEILING_Q", "workers")).consume({ max_messages: perWorker });
    void done.then(() => messages.close());
    for await (const m of messages) {
      m.ack();
      if (++seen === count) allSeen();
    }
  });
  const publisher = createPublisher(nc, { stream: "CEILING_Q" });
  const run = Date.now().toString(36);
  function* jobs() {
    for (let i = 0; i < count; i++) yield { subject: "ceilq.x", data: PAYLOAD, id: `${run}-${i}` };
  }
  // Timed from the first publish to the last ack, as the pattern is (natsQueue).
  const r = await timed(async () => {
    await publisher.publishAll(jobs());
    await within(done, 120_000);
    return seen;
  });
  publisher.close();
  allSeen();
  await Promise.all(loops);
  await Promise.all(conns.map((c) => c.close()));
  return r;
}
