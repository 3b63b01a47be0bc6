// The kit's startPulling: the count of jobs asked for (and so the worker's free slots) follows the
// pulls the server holds, across a server restart too.
import { AckPolicy, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type NatsServer, sleep, useServer, waitFor } from "@repo/harness";
import { startPulling } from "@repo/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;

beforeAll(async () => {
  server = await useServer();
  nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "ASKED", subjects: ["asked.>"] });
  await jsm.consumers.add("ASKED", { durable_name: "c", ack_policy: AckPolicy.Explicit });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe(`the kit's startPulling on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("forgets the pulls a restarted server lost, though later pulls keep answering", async () => {
    const puller = startPulling(nc, { stream: "ASKED", consumer: "c", expiresMs: 1_000, onJob: () => {}, onChange: () => {} });
    try {
      puller.ask(4); // waiting at the server when it restarts: never answered
      await sleep(200);
      await server.kill();
      await server.restart();
      await waitFor("reconnected", async () => {
        try {
          await nc.flush();
          return nc.info?.server_id !== undefined;
        } catch {
          return false;
        }
      });
      await sleep(500);
      // A worker asks on while its slots seem taken: each pull expires after 1 s with a 408 (a sign of
      // life), which must not keep the lost 4 counted.
      for (let i = 0; i < 4; i++) {
        puller.ask(4);
        await sleep(1_300);
      }
      expect(puller.asked).toBe(0);
    } finally {
      await puller.close();
    }
  });
});
