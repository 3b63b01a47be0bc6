// A single nats-server (file storage) killed with SIGKILL while a producer publishes with acks.
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type NatsServer, startServer, sleep, waitFor } from "@repo/harness";
import { afterEach, describe, expect, it } from "vitest";
import { readStored, storedTwice } from "../../../patterns/dedup-publish/src/consumer.js";
import { payment, publishPipelined } from "../../../patterns/dedup-publish/src/producer.js";
import { setup, STREAM } from "../../../patterns/dedup-publish/src/setup.js";

let server: NatsServer | undefined;
afterEach(async () => {
  await server?.stop();
});

describe("server crash (SIGKILL) during acked publishing", () => {
  for (const sync of ["default", "always"] as const) {
    it(`keeps every acknowledged message and stores retried ones once (sync_interval: ${sync})`, async () => {
      server = await startServer({ sync });
      const nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
      await setup(await jetstreamManager(nc));
      const msgs = Array.from({ length: 3_000 }, (_, i) => payment(`crash-${i}`, i));
      const publishing = publishPipelined(nc, msgs, { window: 64, timeoutMs: 500, attempts: 40 });
      const jsm = await jetstreamManager(nc);
      await waitFor("a third stored", async () => (await jsm.streams.info(STREAM)).state.messages >= 1_000, { everyMs: 5 });
      await server.kill(); // SIGKILL: no shutdown, no flush
      await sleep(300);
      await server.restart(); // same port, same store dir
      const results = await publishing;

      const acked = results.filter((r) => !r.error).map((r) => r.id);
      const stored = await readStored(nc);
      const storedIds = new Set(stored.map((s) => s.id));
      const ackedMissing = acked.filter((id) => !storedIds.has(id));
      expect(results.filter((r) => r.error)).toEqual([]); // every message was eventually acked
      expect(ackedMissing).toEqual([]); // acked-and-missing = 0
      expect(storedTwice(stored)).toEqual([]);
      expect(stored.length).toBe(msgs.length);
      expect(results.some((r) => r.attempts > 1)).toBe(true); // the crash really interrupted publishing
      await nc.close();
    });
  }
});
