// The ingest service a starter deploys (`npm start`; the demo is `npm run demo`): an HTTP front that
// stores each payment once however often it is sent. POST /payments {"id": "...", "amount": 100}
// answers 200 {"seq", "duplicate"} once the stream has it (the id is its Nats-Msg-Id: a retry within
// the duplicate window is acked as a duplicate, not stored again), 400 for a malformed body, 503 when
// it could not be stored (the client retries with the same id). INGEST_PORT (default 8080) and
// INGEST_HOST (default 127.0.0.1; 0.0.0.0 in a container). On SIGTERM or SIGINT it stops accepting,
// answers the requests in flight within STOP_DEADLINE_MS, and exits 0 (the kit's runService).
import { createServer, type IncomingMessage } from "node:http";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { intOption, isEntry, jsonObject, runService, stopWithin } from "@repo/kit";
import { payment, publishIdempotent } from "./producer.js";
import { STREAM, setup } from "./setup.js";

const ID = /^[A-Za-z0-9_-]{1,128}$/;

async function body(req: IncomingMessage): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

if (isEntry(import.meta.url)) {
  runService("dedup-publish-service", async (nc, log) => {
    const port = intOption("INGEST_PORT", process.env.INGEST_PORT ?? "8080", 0);
    const jsm = await jetstreamManager(nc);
    await setup(jsm);
    const js = jetstream(nc);
    const server = createServer(async (req, res) => {
      const reply = (status: number, value: unknown) =>
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));
      if (req.method !== "POST" || req.url !== "/payments") return reply(404, { error: "POST /payments only" });
      let id: unknown;
      let amount: unknown;
      try {
        ({ id, amount } = jsonObject(await body(req)));
      } catch (err) {
        return reply(400, { error: (err as Error).message });
      }
      if (typeof id !== "string" || !ID.test(id) || !Number.isInteger(amount) || (amount as number) <= 0)
        return reply(400, { error: 'expected {"id": letters, digits, - or _, "amount": a positive integer}' });
      const r = await publishIdempotent(js, payment(id, amount as number));
      if (r.error) return reply(503, { error: r.error });
      log.info({ id, seq: r.seq, duplicate: r.duplicate }, r.duplicate ? "duplicate" : "stored");
      reply(200, { id, seq: r.seq, duplicate: r.duplicate });
    });
    await new Promise<void>((resolve) => server.listen(port, process.env.INGEST_HOST ?? "127.0.0.1", resolve));
    const address = server.address();
    log.info({ port: typeof address === "object" && address ? address.port : port }, "accepting payments on POST /payments");
    return {
      stop: (deadlineMs) => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections(); // kept-alive clients would hold the close open
        return stopWithin(closed, deadlineMs, log);
      },
      health: async () => ({ stored: (await jsm.streams.info(STREAM)).state.messages }),
    };
  });
}
