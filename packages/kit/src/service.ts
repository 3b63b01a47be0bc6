// A long-running service around a pattern's workers or consumers: what a starter's `npm start` runs.
// It connects from the environment (reconnecting for ever), starts what `start` returns, optionally
// serves GET /healthz, and on SIGTERM or SIGINT stops within STOP_DEADLINE_MS and exits 0.
//
// Environment: the connection variables (NATS_URL, ...); STOP_DEADLINE_MS (default 10000);
// HEALTH_PORT to serve GET /healthz (off by default) on HEALTH_HOST (default 127.0.0.1; 0.0.0.0 in a
// container): 200 with `ok: true` and the service's own facts while connected and they can be read,
// 503 otherwise.
import { createServer, type Server } from "node:http";
import type { NatsConnection } from "@nats-io/transport-node";
import { intOption, runMain } from "./cli.js";
import { connectFromEnv } from "./connect.js";
import type { Logger } from "./log.js";
import type { Stoppable } from "./serve.js";

/** A service's work: stopped within STOP_DEADLINE_MS (a Stoppable), and its facts for /healthz. */
export interface Running extends Stoppable {
  /** runService always gives the deadline (STOP_DEADLINE_MS). */
  stop(deadlineMs: number): Promise<void>;
  /** Facts for /healthz (e.g. a consumer's pending counts); throwing means unhealthy. */
  health?(): Promise<Record<string, unknown>>;
}

function healthServer(nc: NatsConnection, running: Running, log: Logger): Server {
  return createServer(async (req, res) => {
    if (req.url !== "/healthz") return void res.writeHead(404).end();
    try {
      if (nc.isClosed()) throw new Error("connection closed");
      const facts = (await running.health?.()) ?? {};
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ok: true, server: nc.getServer(), ...facts }));
    } catch (err) {
      log.warn({ err: String(err) }, "health check failed");
      res.writeHead(503, { "content-type": "application/json" }).end(JSON.stringify({ ok: false, error: String(err) }));
    }
  });
}

/**
 * For a stop that cannot hand work back: waits for it at most `deadlineMs`. Work still in hand then
 * is not acked, so the server delivers it again after its ack_wait.
 */
export async function stopWithin(stop: Promise<void>, deadlineMs: number, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), deadlineMs);
  });
  const passed = await Promise.race([stop.then(() => false), late]);
  clearTimeout(timer);
  if (passed) log.warn({ deadline_ms: deadlineMs }, "stop deadline passed: unacked work comes back after its ack_wait");
}

/** Runs `start` as a service until SIGTERM or SIGINT (both a clean stop: exit 0). */
export function runService(name: string, start: (nc: NatsConnection, log: Logger) => Promise<Running>): void {
  runMain(name, async (signal, log) => {
    const deadlineMs = intOption("STOP_DEADLINE_MS", process.env.STOP_DEADLINE_MS ?? "10000");
    const healthPort = process.env.HEALTH_PORT ? intOption("HEALTH_PORT", process.env.HEALTH_PORT) : undefined;
    const nc = await connectFromEnv(name, { maxReconnectAttempts: -1 });
    const running = await start(nc, log);
    const health =
      healthPort === undefined ? undefined : healthServer(nc, running, log).listen(healthPort, process.env.HEALTH_HOST ?? "127.0.0.1");
    log.info({ health: healthPort ?? "off", pid: process.pid }, "serving");
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    log.info({ deadline_ms: deadlineMs }, "stopping: no new work; finishing what is in hand");
    await running.stop(deadlineMs);
    health?.close();
    await nc.drain();
    log.info("stopped");
    process.exitCode = 0; // a requested stop is a clean exit, Ctrl-C included
  });
}
