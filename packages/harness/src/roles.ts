// Tests of a pattern run by its roles (nats/roles.conf): connections as each user, managers that
// skip the account-info check (so a refusal is the operation's own), and the line a refusal gives.
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { type NatsServer, useRolesServer } from "./server.js";

export interface Roles {
  server: NatsServer;
  /** A connection as this user of nats/roles.conf (closed by close()). */
  as(user: string): Promise<NatsConnection>;
  /** A JetStream manager as this user, without the account-info request jetstreamManager() makes first. */
  manager(user: string): Promise<JetStreamManager>;
  close(): Promise<void>;
}

/** The roles server (useRolesServer: docker compose's at NATS_ROLES_URL, else one of its own). */
export async function startRoles(version?: string): Promise<Roles> {
  const server = await useRolesServer(version);
  const open: NatsConnection[] = [];
  const as = async (user: string) => {
    const nc = await connect(server.login(user));
    open.push(nc);
    return nc;
  };
  return {
    server,
    as,
    manager: async (user) => jetstreamManager(await as(user), { checkAPI: false }),
    async close() {
      for (const nc of open) await nc.close().catch(() => {});
      await server.stop();
    },
  };
}

/** The kit's line for a refused publish to `subject` (every JetStream API call is one). */
export const notPermitted = (subject: string) =>
  new RegExp(`^not permitted: this user may not publish to ${subject.replace(/[$.*>]/g, (c) => `\\${c}`)} — `);

/**
 * For a test file: starts the roles server before its tests and stops it after them. The Roles it
 * returns are for use inside the tests (before, the server is not there yet).
 */
export function rolesForTests(): Roles {
  let roles: Roles | undefined;
  beforeAll(async () => {
    roles = await startRoles();
  });
  afterAll(() => roles?.close());
  const started = () => {
    if (!roles) throw new Error("the roles server starts in beforeAll: use it inside tests");
    return roles;
  };
  return {
    get server() {
      return started().server;
    },
    as: (user) => started().as(user),
    manager: (user) => started().manager(user),
    close: async () => {}, // afterAll does it
  };
}
