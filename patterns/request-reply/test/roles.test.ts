// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { Kvm } from "@nats-io/kv";
import { ServiceError, Svcm } from "@nats-io/services";
import { notPermitted, refusal, rolesForTests } from "@repo/harness";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { call, quote, reserve } from "../src/caller.js";
import { startInventory } from "../src/service.js";
import { RESERVATIONS, SERVICE, setup, subjectOf } from "../src/setup.js";

const roles = rolesForTests();
const log = pino({ level: "silent" });

describe("request-reply roles (nats/roles.conf)", () => {
  it("admin sets up, the service serves, the caller quotes, reserves once and finds the service", async () => {
    await setup(await roles.as("admin"));
    const svc = await roles.as("request-reply-service");
    const inventory = await startInventory({ nc: svc, kv: await new Kvm(svc).open(RESERVATIONS), log });
    try {
      const caller = await roles.as("request-reply-caller");
      expect((await quote(caller, { sku: "pear", qty: 2 })).price_cents).toBe(190);
      const r = { id: `roles-${Date.now()}`, sku: "plum", qty: 1 };
      expect((await reserve(caller, r)).reservation.duplicate).toBe(false);
      expect((await reserve(caller, r)).reservation.duplicate).toBe(true);
      expect((await call(caller, subjectOf("quote"), { sku: "kiwi", qty: 1 }).catch((e: unknown) => e)) instanceof ServiceError).toBe(true);
      const found: string[] = [];
      for await (const p of await new Svcm(caller as never).client().ping(SERVICE)) found.push(p.id);
      expect(found).toEqual([inventory.id]);
    } finally {
      await inventory.stop(5_000);
    }
  });

  it("refuses the caller serving or reading reservations, and the service any other publish", async () => {
    const caller = await roles.as("request-reply-caller");
    const impostor = await startInventory({ nc: caller, kv: await new Kvm(await roles.as("admin")).open(RESERVATIONS), log });
    expect(String(await impostor.service.stopped)).toMatch(/Permissions Violation for Subscription to "inventory\.v1\./);
    expect(await refusal(new Kvm(caller).open(RESERVATIONS).then((kv) => kv.get("any")))).toMatch(/not permitted/);
    const svc = await roles.manager("request-reply-service");
    expect(await refusal(svc.streams.purge(`KV_${RESERVATIONS}`))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.KV_${RESERVATIONS}`));
    expect(await refusal(svc.streams.delete(`KV_${RESERVATIONS}`))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.KV_${RESERVATIONS}`));
    expect(await refusal((await roles.as("request-reply-service")).request("orders.created", "x"))).toMatch(notPermitted("orders.created"));
  });
});
