// request-reply against what users pick instead: Node's HTTP/1.1 with keep-alive on loopback. The same
// endpoint logic (a quote), the same JSON body, one server each (an inventory instance; an http
// server), the same number of requests in flight, in this process both. Throughput at that
// concurrency, then latency (due time to answer) at half of each side's measured maximum.
import { Agent, createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { connect, delay } from "@nats-io/transport-node";
import { quote } from "@patterns/request-reply/caller";
import { priceOf, quoteRequest } from "@patterns/request-reply/messages";
import { startInventory } from "@patterns/request-reply/service";
import { setup } from "@patterns/request-reply/setup";
import { createLogger } from "@repo/kit";
import * as hdr from "hdr-histogram-js";
import { type Context, interleaved, type Latency, type Sample } from "./measure.js";

const IN_FLIGHT = 64;
const LATENCY_SECONDS = 10;
const BODY = JSON.stringify({ sku: "pear", qty: 2 });
const log = createLogger("bench");
log.level = "warn";

type Ask = () => Promise<unknown>;

/** `count` requests, IN_FLIGHT at a time; counts the answers. */
async function closedLoop(count: number, ask: Ask): Promise<number> {
  let next = 0;
  let answered = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < count) {
        next++;
        await ask();
        answered++;
      }
    }),
  );
  return answered;
}

/** `count` requests at `rate`/s, each timed from when it was due to its answer (µs, HDR). */
async function openLoop(count: number, rate: number, ask: Ask): Promise<{ run: Sample; latency: Latency }> {
  const h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  const t0 = performance.now();
  const asked: Promise<void>[] = [];
  for (let sent = 0; sent < count; await delay(1)) {
    const due = Math.min(count, Math.floor(((performance.now() - t0) * rate) / 1_000) + 1);
    for (; sent < due; sent++) {
      const at = t0 + (sent * 1_000) / rate;
      asked.push(ask().then(() => void h.recordValue(Math.max(1, Math.round((performance.now() - at) * 1_000)))));
    }
  }
  await Promise.all(asked);
  const seconds = (performance.now() - t0) / 1_000;
  const ms = (p: number) => Math.round(h.getValueAtPercentile(p)) / 1_000;
  return {
    run: { count, seconds },
    latency: { offered: Math.round(rate), p50: ms(50), p99: ms(99), p999: ms(99.9), max: Math.round(h.maxValue) / 1_000 },
  };
}

async function httpServer() {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r = quoteRequest(Buffer.concat(chunks));
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ...r, price_cents: priceOf(r), version: "1.0.0" }));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const ask: Ask = () =>
    new Promise((resolve, reject) => {
      const req = request(
        { agent, host: "127.0.0.1", port, path: "/quote", method: "POST", headers: { "content-type": "application/json" } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            res.statusCode === 200 ? resolve(JSON.parse(Buffer.concat(chunks).toString())) : reject(new Error(`${res.statusCode}`)),
          );
        },
      );
      req.on("error", reject);
      req.end(BODY);
    });
  return {
    ask,
    stop: async () => {
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export async function requestBenches(ctx: Context): Promise<void> {
  const count = ctx.quick ? 2_000 : 100_000;
  const serving = await connect({ servers: ctx.url, name: "bench-inventory" });
  const inventory = await startInventory({ nc: serving, kv: await setup(serving), log });
  const caller = await connect({ servers: ctx.url, name: "bench-caller" });
  const nats: Ask = () => quote(caller, { sku: "pear", qty: 2 });
  const http = await httpServer();
  try {
    await closedLoop(2_000, nats); // warm up (JIT), untimed
    await closedLoop(2_000, http.ask);
    const max = await interleaved(ctx.quick ? 1 : 3, { http: () => closedLoop(count, http.ask), nats: () => closedLoop(count, nats) });
    ctx.expect("http requests answered", max.http.count, count);
    ctx.expect("request-reply requests answered", max.nats.count, count);
    const what = `${IN_FLIGHT} in flight, a 30-byte JSON quote, one server, loopback`;
    ctx.record({ name: "http.keepalive", what: `node:http, HTTP/1.1 keep-alive, ${what}`, ...max.http });
    ctx.record({
      name: "request-reply",
      what: `the inventory service's quote (Services API), ${what}`,
      ...max.nats,
      ratioOf: "http.keepalive",
    });
    const half = (s: Sample) => (ctx.quick ? 500 : s.count / s.seconds / 2);
    const seconds = ctx.quick ? 1 : LATENCY_SECONDS;
    const h = await openLoop(Math.round(half(max.http) * seconds), half(max.http), http.ask);
    const n = await openLoop(Math.round(half(max.nats) * seconds), half(max.nats), nats);
    ctx.record({ name: "http.latency", what: "node:http at half its maximum, due to answer", ...h.run, latency: h.latency });
    ctx.record({ name: "request-reply.latency", what: "request-reply at half its maximum, due to answer", ...n.run, latency: n.latency });
  } finally {
    await http.stop();
    await inventory.stop(5_000);
    await caller.close();
    await serving.close();
  }
}
