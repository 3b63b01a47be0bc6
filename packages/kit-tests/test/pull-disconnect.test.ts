// The kit's pull() stopped while its connection is down. A pull cannot end then (no expiry comes
// back, no heartbeat is missed), and nats.js pulls again with a fresh expiry when the connection comes
// back: a loop that is stopping must neither wait for the first nor take messages through the second.
import { AckPolicy, type JsMsg, jetstream } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { createLogger, pull } from "@repo/kit";
import { beforeEach, describe, expect, it } from "vitest";

const e2e = serverForTests({ reconnect: true });
const log = createLogger("pull-disconnect-test");
log.level = process.env.LOG_LEVEL ?? "silent";

beforeEach(async () => {
  await e2e.jsm.streams.delete("DOWN").catch(() => {});
  await e2e.jsm.streams.add({ name: "DOWN", subjects: ["down.>"] }); // file storage: kept across the kill
  // ack_wait 30 s, as a deployed consumer: a message left with a pull nobody reads stays that long.
  await e2e.jsm.consumers.add("DOWN", { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000) });
});

/** Resolves once the file's connection has noticed the server is gone. */
async function disconnected(): Promise<void> {
  const statuses = e2e.nc.status();
  for await (const s of statuses) if (s.type === "disconnect") break;
}

/** A loop on consumer c that records what it handles and acks it. */
async function instance(expiresMs: number) {
  const handled: { seq: number; delivery: number }[] = [];
  const consumer = await jetstream(e2e.nc).consumers.get("DOWN", "c");
  const handle = async (m: JsMsg) => {
    handled.push({ seq: m.seq, delivery: m.info.deliveryCount });
    m.ack();
  };
  const serving = await pull(consumer, handle, { nc: e2e.nc, log, who: { test: "down" }, batch: 8, expiresMs });
  return { handled, serving };
}

const publish = async (n: number) => {
  for (let i = 0; i < n; i++) await jetstream(e2e.nc).publish("down.x", String(i));
};

const seqs = (handled: { seq: number }[]) => handled.map((h) => h.seq);

describe(`the kit's pull() stopped while its connection is down, on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("returns at once rather than waiting for a pull that cannot end; the next instance gets every later message, first time", async () => {
    const first = await instance(2_000);
    await publish(3);
    await waitFor("3 handled", () => first.handled.length >= 3, { timeoutMs: 10_000 });
    const down = disconnected();
    await e2e.server.kill(); // down until restarted: no expiry, no missed heartbeat can end the pull
    await down;
    const t0 = Date.now();
    await first.serving.stop();
    const took = Date.now() - t0;
    await e2e.server.restart();
    await e2e.reconnected();
    await publish(3);
    const next = await instance(2_000);
    e2e.stopAfter(next.serving);
    await waitFor("seqs 4-6 handled", () => next.handled.filter((h) => h.seq > 3).length >= 3, {
      timeoutMs: 10_000,
      detail: () => next.handled,
    });
    await sleep(300);
    // A SIGKILLed server may forget the last acks it had (seqs 1-3 may come again): the later ones are certain.
    expect(next.handled.filter((h) => h.seq > 3)).toEqual([4, 5, 6].map((seq) => ({ seq, delivery: 1 })));
    expect(took).toBeLessThan(1_000); // the pull's expiry is 2 s: waiting for it would take 5 s
  });

  it("takes no message through the pull nats.js makes again when the connection comes back while it stops", async () => {
    const first = await instance(2_000);
    await publish(2);
    await waitFor("2 handled", () => first.handled.length >= 2, { timeoutMs: 10_000 });
    await e2e.nc.flush(); // their acks are at the server
    const stopping = first.serving.stop(); // its pull is open at the server for up to 2 s
    await e2e.nc.reconnect(); // the connection drops and comes back (the server stays up)
    await e2e.reconnected();
    await sleep(300); // nats.js pulls again once it has asked for the consumer's info
    await publish(4); // a loop that is stopping must not take these: each would come back a delivery down
    await stopping;
    const next = await instance(2_000);
    e2e.stopAfter(next.serving);
    await waitFor("seqs 3-6 handled", () => next.handled.length >= 4, { timeoutMs: 10_000, detail: () => next.handled });
    await sleep(300);
    expect(seqs(first.handled)).toEqual([1, 2]);
    expect(next.handled).toEqual([3, 4, 5, 6].map((seq) => ({ seq, delivery: 1 })));
  });
});
