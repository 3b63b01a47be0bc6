// What every e2e file sets up: the suite's nats-server (useServer: NATS_URL, else one of the version
// NATS_SERVER_VERSION names), a connection, its JetStream manager, a logger that is silent unless
// LOG_LEVEL says otherwise, and the things a test started, stopped after each test.
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { type ConnectionOptions, connect, type NatsConnection } from "@nats-io/transport-node";
import type { Logger, Stoppable } from "@repo/kit";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll } from "vitest";
import { type NatsServer, type ServerOptions, useServer } from "./server.js";
import { waitFor } from "./testing.js";

export interface FixtureOptions extends ServerOptions {
  /**
   * Connections that reconnect for ever, 100 ms apart (for files whose tests restart the server or
   * drop connections); otherwise nats.js's defaults.
   */
  reconnect?: boolean;
}

export interface ServerForTests {
  readonly server: NatsServer;
  /** The file's connection. */
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  /** The server's version as it says it (nc.info.version). */
  readonly version: string;
  readonly log: Logger;
  /** Another connection to the server, as a separate process would have; closed after the test. */
  connect(name?: string): Promise<NatsConnection>;
  /** Stops `s` after this test, newest first, with `deadlineMs` where its stop takes one (default 10 s). */
  stopAfter<T extends Stoppable>(s: T, deadlineMs?: number): T;
  /** Resolves once the file's connection is back (after a restart or a reconnect): a flush answered. */
  reconnected(): Promise<void>;
}

/**
 * For a test file: starts (or finds) the server before its tests and stops it after them. What it
 * returns is for use inside the tests and hooks (before, the server is not there yet).
 */
export function serverForTests(opts: FixtureOptions = {}): ServerForTests {
  const { reconnect, ...serverOptions } = opts;
  let server: NatsServer | undefined;
  let state: { server: NatsServer; nc: NatsConnection; jsm: JetStreamManager } | undefined;
  const stoppables: { s: Stoppable; deadlineMs: number }[] = [];
  const connections: NatsConnection[] = [];
  const log: Logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
  const options = (url: string): ConnectionOptions => ({
    servers: url,
    ...(reconnect ? { reconnectTimeWait: 100, maxReconnectAttempts: -1 } : {}),
  });
  const started = () => {
    if (!state) throw new Error("the server starts in beforeAll: use it inside tests and hooks");
    return state;
  };
  beforeAll(async () => {
    server = await useServer(serverOptions);
    const nc = await connect(options(server.url));
    state = { server, nc, jsm: await jetstreamManager(nc) };
  });
  afterEach(async () => {
    // Newest first: a service stops before the connection it was given. Every one is stopped and
    // closed even when one of them fails; the first failure is then the hook's.
    const failures: unknown[] = [];
    for (const { s, deadlineMs } of stoppables.splice(0).reverse()) await s.stop(deadlineMs).catch((err: unknown) => failures.push(err));
    for (const c of connections.splice(0)) if (!c.isClosed()) await c.close().catch((err: unknown) => failures.push(err));
    if (failures.length > 0) throw failures[0];
  });
  afterAll(async () => {
    try {
      await state?.nc.close();
    } finally {
      await server?.stop();
    }
  });
  return {
    get server() {
      return started().server;
    },
    get nc() {
      return started().nc;
    },
    get jsm() {
      return started().jsm;
    },
    get version() {
      return started().nc.info?.version ?? "0.0.0";
    },
    log,
    async connect(name) {
      const c = await connect({ ...options(started().server.url), name });
      connections.push(c);
      return c;
    },
    stopAfter(s, deadlineMs = 10_000) {
      stoppables.push({ s, deadlineMs });
      return s;
    },
    async reconnected() {
      const { nc } = started();
      await waitFor("reconnected", async () => {
        try {
          await nc.flush();
          return nc.info?.server_id !== undefined;
        } catch {
          return false;
        }
      });
    },
  };
}
