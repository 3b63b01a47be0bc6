// The kit's startPulling: the count of jobs asked for (and so the worker's free slots) follows the
// pulls the server holds, across a server restart too.
import { AckPolicy } from "@nats-io/jetstream";
import { serverForTests, sleep, waitFor } from "@repo/harness";
import { startPulling } from "@repo/kit";
import { beforeAll, describe, expect, it } from "vitest";

const e2e = serverForTests({ reconnect: true });

beforeAll(async () => {
  await e2e.jsm.streams.add({ name: "ASKED", subjects: ["asked.>"] });
  await e2e.jsm.consumers.add("ASKED", { durable_name: "c", ack_policy: AckPolicy.Explicit });
});

describe(`the kit's startPulling on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("forgets the pulls a restarted server lost, though later pulls keep answering", async () => {
    const puller = startPulling(e2e.nc, { stream: "ASKED", consumer: "c", expiresMs: 1_000, onJob: () => {}, onChange: () => {} });
    try {
      puller.ask(4); // waiting at the server when it restarts: never answered
      await sleep(200);
      await e2e.server.kill();
      await e2e.server.restart();
      await waitFor("reconnected", async () => {
        try {
          await e2e.nc.flush();
          return e2e.nc.info?.server_id !== undefined;
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
