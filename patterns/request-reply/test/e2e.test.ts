import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { KV } from "@nats-io/kv";
import { ServiceError, type ServiceIdentity, type ServiceStats, Svcm } from "@nats-io/services";
import { serverForTests, waitFor } from "@repo/harness";
import { isNoResponders, isTimeout } from "@repo/kit";
import { beforeAll, describe, expect, it } from "vitest";
import { call, gather, quote, reserve } from "../src/caller.js";
import type { Quote, Reservation } from "../src/messages.js";
import { type Inventory, startInventory } from "../src/service.js";
import { SERVICE, setup, subjectOf } from "../src/setup.js";

const e2e = serverForTests();
let kv: KV;
beforeAll(async () => {
  kv = await setup(e2e.nc);
});

/** An instance on a connection of its own, as a separate process would have. */
async function instance(version = "1.0.0", workMs = 0): Promise<Inventory> {
  return e2e.stopAfter(await startInventory({ nc: await e2e.connect(), kv, log: e2e.log, version, workMs }), 5_000);
}
const services = () => new Svcm(e2e.nc as never).client();
const all = async <T>(it: Promise<AsyncIterable<T>>) => {
  const out: T[] = [];
  for await (const x of await it) out.push(x);
  return out;
};
const refusedWith = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ServiceError);
  return err as ServiceError;
};

describe(`request-reply on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("spreads requests over the instances of its queue group, and discovery sees each with its counts", async () => {
    const ids = [(await instance()).id, (await instance()).id, (await instance()).id];
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => quote(e2e.nc, { sku: "pear", qty: 1 + (i % 7) })));
    expect(answers.every((a, i) => a.price_cents === 95 * (1 + (i % 7)))).toBe(true);
    const pings = await all(services().ping(SERVICE));
    expect(pings.map((p: ServiceIdentity) => p.id).sort()).toEqual([...ids].sort());
    const stats = await all(services().stats(SERVICE));
    const quoted = stats.map((s: ServiceStats) => s.endpoints?.find((e) => e.name === "quote")?.num_requests ?? 0);
    expect(quoted.reduce((a, b) => a + b, 0)).toBe(300);
    // A queue group picks at random: each of the three had a share (the chance one got none is 3·(2/3)^300).
    for (const n of quoted) expect(n).toBeGreaterThan(0);
    const info = await all(services().info(SERVICE));
    expect(info[0]!.endpoints.map((e) => e.subject).sort()).toEqual([
      "inventory.v1.catalogue",
      "inventory.v1.quote",
      "inventory.v1.reserve",
    ]);
  });

  it("returns each refusal as a ServiceError with its code, and counts it apart from the answers", async () => {
    await instance();
    expect((await refusedWith(quote(e2e.nc, { sku: "kiwi", qty: 1 }))).code).toBe(404);
    expect((await refusedWith(call(e2e.nc, subjectOf("quote"), { sku: "pear", qty: 0 }))).code).toBe(400);
    const garbled = await e2e.nc.request(subjectOf("quote"), "{not json", { timeout: 2_000 });
    expect(garbled.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect((await refusedWith(call(e2e.nc, subjectOf("reserve"), { sku: "pear", qty: 2 }))).message).toMatch(/"id"/);
    expect(await quote(e2e.nc, { sku: "plum", qty: 2 })).toMatchObject({ price_cents: 120, version: "1.0.0" });
    const [stats] = await all(services().stats(SERVICE));
    const data = stats!.endpoints!.find((e) => e.name === "quote")!.data;
    expect(data).toMatchObject({ refused: 4, answered: 1, failed: 0 });
  });

  it("answers no responders at once when no instance runs, not a timeout", async () => {
    const started = Date.now();
    const err = await quote(e2e.nc, { sku: "pear", qty: 1 }, "1", 5_000).catch((e: unknown) => e);
    expect(isNoResponders(err)).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("reserves once per id: a request sent again gets the first answer, and another use of the id is refused", async () => {
    const [a, b] = [await instance(), await instance()];
    const r = { id: `once-${Date.now()}`, sku: "apple", qty: 3 };
    const answers = await Promise.all(Array.from({ length: 20 }, () => call<Reservation>(e2e.nc, subjectOf("reserve"), r)));
    expect(answers.filter((x) => !x.duplicate)).toHaveLength(1);
    const first = answers.find((x) => !x.duplicate)!;
    expect([a.id, b.id]).toContain(first.by);
    for (const x of answers) expect({ ...x, duplicate: false }).toEqual(first);
    expect((await refusedWith(call(e2e.nc, subjectOf("reserve"), { ...r, qty: 4 }))).code).toBe(409);
    expect(JSON.parse((await kv.get(r.id))!.string())).toEqual(first);
  });

  it("gathers many answers with requestMany: by count, by a stall, and up to a sentinel", async () => {
    await Promise.all([instance(), instance(), instance()]);
    // $SRV.PING.inventory has no queue group: every instance answers.
    expect(await gather(e2e.nc, `$SRV.PING.${SERVICE}`, { strategy: "count", maxMessages: 2 })).toHaveLength(2);
    const started = Date.now();
    expect(await gather(e2e.nc, `$SRV.PING.${SERVICE}`, { strategy: "stall", stall: 300, maxWait: 5_000 })).toHaveLength(3);
    expect(Date.now() - started).toBeLessThan(4_000); // ended by the stall, not by maxWait
    const catalogue = await gather(e2e.nc, subjectOf("catalogue"), { strategy: "sentinel", maxWait: 5_000 });
    expect(catalogue.map((m) => m.json<{ sku: string }>().sku)).toEqual(["apple", "pear", "plum"]);
  });

  it("rolls 1.0.0 to 1.1.0 under load with no request lost, while 2.0.0 answers only callers pinned to v2", async () => {
    const old = [await instance("1.0.0"), await instance("1.0.0")];
    await instance("2.0.0");
    const versions: string[] = [];
    const failures: unknown[] = [];
    let sending = true;
    const callers = Array.from({ length: 4 }, async () => {
      for (let i = 0; sending && i < 5_000; i++)
        await quote(e2e.nc, { sku: "apple", qty: 1 }).then(
          (q: Quote) => versions.push(q.version),
          (e: unknown) => failures.push(e),
        );
    });
    await waitFor("1.0.0 answering", () => versions.length >= 50);
    await instance("1.1.0");
    await instance("1.1.0");
    for (const o of old) await o.stop(5_000); // drained: what they had is answered (stopping again after is a no-op)
    const after = versions.length;
    await waitFor("1.1.0 answering", () => versions.length >= after + 100);
    sending = false;
    await Promise.all(callers);
    expect(failures).toEqual([]);
    expect(new Set(versions)).toEqual(new Set(["1.0.0", "1.1.0"]));
    // Stopped means drained: once its last answers are read, 1.0.0 answers nothing more.
    expect(versions.slice(-50)).not.toContain("1.0.0");
    expect((await quote(e2e.nc, { sku: "apple", qty: 1 }, "2")).version).toBe("2.0.0");
  });

  it("SIGKILL of an instance mid-request: each request ends within its timeout, and a retry by id reserves once", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/service.ts"], {
      cwd: new URL("..", import.meta.url).pathname,
      env: { ...process.env, NATS_URL: e2e.server.url, LOG_FORMAT: "json", WORK_MS: "300" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let ready = false;
    createInterface({ input: child.stdout! }).on("line", (l) => {
      if ((JSON.parse(l) as { msg: string }).msg === "serving") ready = true;
    });
    try {
      await waitFor("the service process ready", () => ready, { timeoutMs: 30_000 });
      await instance("1.0.0", 300);
      const run = Date.now().toString(36);
      const timeoutMs = 1_500;
      // 40 requests in flight across both instances, and the process dies with its share in hand.
      const sent = Array.from({ length: 40 }, (_, i) => {
        const r = { id: `k-${run}-${i}`, sku: "plum", qty: 1 };
        const started = Date.now();
        return call<Reservation>(e2e.nc, subjectOf("reserve"), r, timeoutMs).then(
          (x) => ({ r, ok: x, ms: Date.now() - started }),
          (e: unknown) => ({ r, err: e, ms: Date.now() - started }),
        );
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      child.kill("SIGKILL");
      const ended = await Promise.all(sent);
      for (const e of ended) expect(e.ms, e.r.id).toBeLessThan(timeoutMs + 500);
      const lost = ended.filter((e) => "err" in e);
      expect(lost.length).toBeGreaterThan(0); // the killed process's share
      for (const e of lost) expect(isTimeout(e.err), String(e.err)).toBe(true);
      // Sent again with the same ids: each reserved once, whether or not the killed instance had made it.
      for (const e of ended) {
        const { reservation } = await reserve(e2e.nc, e.r, { timeoutMs });
        if ("ok" in e) expect(reservation).toEqual({ ...e.ok, duplicate: true });
        expect(JSON.parse((await kv.get(e.r.id))!.string())).toEqual({ ...reservation, duplicate: false });
      }
      const keys: string[] = [];
      for await (const k of await kv.keys()) if (k.startsWith(`k-${run}-`)) keys.push(k);
      expect(keys.sort()).toEqual(ended.map((e) => e.r.id).sort());
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
