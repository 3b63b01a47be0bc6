// Every user of nats/roles.conf gets its replies under its own prefix (_INBOX.<user>, nats.js's
// inboxPrefix, NATS_INBOX_PREFIX for the kit) and may subscribe nowhere else in _INBOX: no role
// can read the jobs another pulls or the API answers another gets.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { repoRoot, rolesForTests, sleep, waitFor } from "@repo/harness";
import { createLogger, pull } from "@repo/kit";
import { describe, expect, it } from "vitest";

const roles = rolesForTests();
const users = [...readFileSync(join(repoRoot, "nats/roles.conf"), "utf8").matchAll(/\{ user: ([a-z-]+),/g)].map((m) => m[1]!);

/** "refused" when the server refuses the subscription, else what it received meanwhile. */
async function subscribeAs(nc: NatsConnection, subject: string): Promise<string> {
  const sub = nc.subscribe(subject);
  const closed = sub.closed.then((err) => (err ? "refused" : "closed"));
  await nc.flush();
  const end = await Promise.race([closed, sleep(500).then(() => "open")]);
  sub.unsubscribe();
  return end;
}

describe("each role's replies are its own (nats/roles.conf)", () => {
  it("finds every user", () => expect(users.length).toBeGreaterThanOrEqual(18));

  for (const user of users) {
    it(`${user}: gets replies on _INBOX.${user}.>, and may not subscribe to _INBOX.> or another role's inboxes`, async () => {
      const other = users.find((u) => u !== user)!;
      const fresh = await connect(roles.server.login(user));
      try {
        expect((fresh as unknown as { options: { inboxPrefix?: string } }).options.inboxPrefix).toBe(`_INBOX.${user}`);
        expect(await subscribeAs(fresh, `_INBOX.${user}.x`), "its own").toBe("open");
        expect(await subscribeAs(fresh, "_INBOX.>"), "_INBOX.>").toBe("refused");
        expect(await subscribeAs(fresh, `_INBOX.${other}.>`), `_INBOX.${other}.>`).toBe("refused");
      } finally {
        await fresh.close();
      }
    });
  }
});

describe("the kit's pull() when the server refuses its pulls (nats/roles.conf)", () => {
  it("stops with one line saying why, and says it in `stopped` (what /healthz answers 503 with)", async () => {
    const admin = await roles.manager("admin");
    await admin.streams.add({ name: "JOBS", subjects: ["jobs.>"], retention: "workqueue" as never, storage: "memory" as never });
    await admin.consumers.add("JOBS", { durable_name: "workers", ack_policy: "explicit" as never });
    // The dlq mover may read the consumer's info but not pull from it.
    const dlq = await roles.as("work-queue-dlq");
    const consumer = await jetstream(dlq).consumers.get("JOBS", "workers");
    const log = createLogger("refused-pull");
    log.level = process.env.LOG_LEVEL ?? "silent";
    const serving = await pull(consumer, async () => {}, { nc: dlq, log, who: { test: "refused" }, expiresMs: 1_000 });
    try {
      await waitFor("the loop stopped by itself", () => serving.stopped !== undefined, { timeoutMs: 10_000 });
      expect(serving.stopped).toMatch(/not permitted.*\$JS\.API\.CONSUMER\.MSG\.NEXT\.JOBS\.workers/i);
    } finally {
      await serving.stop();
    }
  });
});
