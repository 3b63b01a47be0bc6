// What the kit tells apart in an error (packages/kit/src/errors.ts), from the errors a real nats-server
// and nats.js give: a missing stream, nobody listening, no answer in time, a refused publish or
// subscription, bad credentials, TLS, no JetStream; and the one line `explain` makes of each.
import { parseArgs } from "node:util";
import { JetStreamApiError, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { makeTestCerts, type NatsServer, serverForTests, sleep, startServer, waitFor } from "@repo/harness";
import {
  ApiCodes,
  apiCode,
  connectFromEnv,
  createPublisher,
  explain,
  isAuthError,
  isJetStreamNotEnabled,
  isNoResponders,
  isNotFound,
  isTimeout,
  isTlsError,
  isTransient,
  messageOf,
  permissionDenied,
  UserError,
  watchRefusals,
} from "@repo/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const e2e = serverForTests();

/** What `attempt` rejects with (the test fails if it resolves). */
async function rejection(attempt: Promise<unknown>): Promise<unknown> {
  return attempt.then(
    () => expect.fail("expected a rejection"),
    (err: unknown) => err,
  );
}

/** A JetStream API error as the server answers it (server/errors.json), for answers no test can provoke cheaply. */
const answered = (code: number, err_code: number, description: string) => new JetStreamApiError({ code, err_code, description });

describe("JetStream's answers", () => {
  it("a missing stream or consumer is not found, with its code; another refusal is not", async () => {
    const noStream = await rejection(e2e.jsm.streams.info("NO_SUCH_STREAM"));
    expect(isNotFound(noStream)).toBe(true);
    expect(apiCode(noStream)).toBe(ApiCodes.StreamNotFound);
    await e2e.jsm.streams.add({ name: "ERRORS", subjects: ["errors.>"], storage: "memory" as never });
    const noConsumer = await rejection(e2e.jsm.consumers.info("ERRORS", "nobody"));
    expect(isNotFound(noConsumer)).toBe(true);
    expect(apiCode(noConsumer)).toBe(ApiCodes.ConsumerNotFound);
    // The same name with other subjects: refused (10058), and not "not found".
    const inUse = await rejection(e2e.jsm.streams.add({ name: "ERRORS", subjects: ["other.>"], storage: "memory" as never }));
    expect(apiCode(inUse)).toBe(10058); // JSStreamNameExistErr
    expect(isNotFound(inUse)).toBe(false);
    expect(isTransient(inUse)).toBe(false);
    expect(apiCode(new Error("not from JetStream"))).toBeUndefined();
    expect(isNotFound(new Error("not from JetStream"))).toBe(false);
    expect(explain(inUse, "setup")).toBe(`setup failed: ${messageOf(inUse)}`);
  });

  it("worth another try: 503, 429, a msg id being stored (10158), no responders, a timeout; nothing else", async () => {
    expect(isTransient(answered(503, 10008, "JetStream system temporarily unavailable"))).toBe(true);
    expect(isTransient(answered(429, 10167, "too many requests"))).toBe(true);
    expect(isTransient(answered(409, ApiCodes.DuplicateInProcess, "duplicate message id is in process"))).toBe(true);
    expect(isTransient(answered(400, ApiCodes.StreamWrongLastSequence, "wrong last sequence: 1"))).toBe(false);
    expect(isTransient(answered(409, ApiCodes.WrongLastSequenceInProcess, "wrong last sequence in process"))).toBe(false);
    const noResponders = await rejection(e2e.nc.request("nobody.listens"));
    expect(isNoResponders(noResponders)).toBe(true);
    expect(isTimeout(noResponders)).toBe(false);
    expect(isTransient(noResponders)).toBe(true);
    const silent = e2e.nc.subscribe("silent.subject"); // takes the request, never answers
    try {
      const timedOut = await rejection(e2e.nc.request("silent.subject", "", { timeout: 200 }));
      expect(isTimeout(timedOut)).toBe(true);
      expect(isNoResponders(timedOut)).toBe(false);
      expect(isTransient(timedOut)).toBe(true);
    } finally {
      silent.unsubscribe();
    }
    expect(isTransient(new Error("anything else"))).toBe(false);
    expect(isTransient("not even an error")).toBe(false);
  });

  it("a JetStream publish nobody answers reads as no JetStream, and says to enable it", async () => {
    const err = await rejection(jetstream(e2e.nc).publish("no.stream.here", "x", { timeout: 1_000 }));
    expect(isJetStreamNotEnabled(err)).toBe(true);
    expect(isNoResponders(err)).toBe(true);
    expect(explain(err)).toMatch(/^no JetStream answered: is it enabled on this server\? Start nats-server with -js/);
  });
});

describe("causes", () => {
  it("looks five errors deep (nats.js wraps two at most), no further, and ends on a cycle of causes", () => {
    const wrapped = (depth: number) => {
      let err: Error = Object.assign(new Error("certificate has expired"), { code: "CERT_HAS_EXPIRED" });
      for (let i = 0; i < depth; i++) err = new Error(`wrapper ${i}`, { cause: err });
      return err;
    };
    expect(isTlsError(wrapped(0))).toBe(true);
    expect(isTlsError(wrapped(4))).toBe(true);
    expect(isTlsError(wrapped(5))).toBe(false);
    const cycle = new Error("a cycle");
    (cycle as { cause?: unknown }).cause = cycle;
    expect(isTimeout(cycle)).toBe(false);
    expect(permissionDenied(cycle)).toBeUndefined();
  });

  it("messageOf: an error's message, or anything else as a string", () => {
    expect(messageOf(new Error("broken"))).toBe("broken");
    expect(messageOf("plain words")).toBe("plain words");
    expect(messageOf(42)).toBe("42");
  });
});

describe("a user whose permissions refuse some subjects", () => {
  let locked: NatsServer;
  const config = `authorization { users: [
    { user: limited, password: limited-pass, permissions: {
        publish: { deny: ["forbidden.>"] },
        subscribe: { deny: ["forbidden.>", "_INBOX.someone-else.>"] } } }
  ] }`;
  let nc: NatsConnection;
  beforeAll(async () => {
    locked = await startServer({ config });
    nc = await connect({ servers: locked.url, user: "limited", pass: "limited-pass" });
  });
  afterAll(async () => {
    await nc?.close();
    await locked?.stop();
  });

  it("a refused request is permission denied, for publish, and explain names the subject", async () => {
    const err = await rejection(nc.request("forbidden.api", "", { timeout: 2_000 }));
    const denied = permissionDenied(err);
    expect(denied?.operation).toBe("publish");
    expect(denied?.subject).toBe("forbidden.api");
    expect(isTimeout(err)).toBe(false);
    expect(explain(err)).toMatch(
      /^not permitted: this user may not publish to forbidden\.api — run this step as a user whose permissions allow it/,
    );
    expect(permissionDenied(new Error("no refusal here"))).toBeUndefined();
  });

  it("a refused subscription is named as one, and one to an inbox says to set NATS_INBOX_PREFIX", async () => {
    for (const [subject, line] of [
      ["forbidden.events", /^not permitted: this user may not subscribe to forbidden\.events — run this step as a user/],
      [
        "_INBOX.someone-else.x",
        /^not permitted: this user may not subscribe to _INBOX\.someone-else\.x, where its replies would come — set NATS_INBOX_PREFIX/,
      ],
    ] as const) {
      const sub = nc.subscribe(subject);
      const err = await sub.closed;
      expect(permissionDenied(err)?.operation).toBe("subscription");
      expect(explain(err)).toMatch(line);
    }
  });

  it("watchRefusals: keeps every publish refused, by subject, not a refused subscription; stop() ends it", async () => {
    const refusals = watchRefusals(nc);
    nc.publish("forbidden.a", "x");
    nc.publish("allowed.b", "x");
    await waitFor("the refusal of forbidden.a", () => refusals.get("forbidden.a") !== undefined, { timeoutMs: 5_000 });
    expect(refusals.get("forbidden.a")?.operation).toBe("publish");
    expect(refusals.get("allowed.b")).toBeUndefined();
    const sub = nc.subscribe("forbidden.sub");
    await sub.closed;
    expect(refusals.get("forbidden.sub")).toBeUndefined();
    refusals.stop();
    nc.publish("forbidden.later", "x");
    await nc.flush();
    await sleep(300);
    expect(refusals.get("forbidden.later")).toBeUndefined();
  });

  it("the publisher fails a publish this user may not make at its next sweep, with the line that says so, sent once", async () => {
    const publisher = createPublisher(nc, { timeoutMs: 5_000, attempts: 5 });
    const start = Date.now();
    const result = await publisher.publish({ subject: "forbidden.orders", data: new Uint8Array(1), id: "o-1" });
    publisher.close();
    expect(Date.now() - start).toBeLessThan(2_000); // not after its timeout, nor after five attempts
    expect(result).toMatchObject({ seq: 0, attempts: 1 });
    expect(result.error).toMatch(/^not permitted: this user may not publish to forbidden\.orders — /);
  });

  it("a wrong password is an authorization error, and not a TLS one", async () => {
    const err = await rejection(connect({ servers: locked.url, user: "limited", pass: "wrong", reconnect: false }));
    expect(isAuthError(err)).toBe(true);
    expect(isTlsError(err)).toBe(false);
    expect(isAuthError(new Error("something else"))).toBe(false);
  });
});

describe("TLS", () => {
  const certs = makeTestCerts();
  let secured: NatsServer;
  beforeAll(async () => {
    secured = await startServer({ config: `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}" }` });
  });
  afterAll(() => secured?.stop());

  it("a certificate the client cannot verify is a TLS error", async () => {
    const err = await rejection(connect({ servers: secured.url.replace("nats:", "tls:"), tls: {}, reconnect: false }));
    expect(isTlsError(err)).toBe(true);
    expect(isAuthError(err)).toBe(false);
  });

  it("asking TLS of a server without it is a TLS error", async () => {
    const err = await rejection(connect({ servers: e2e.server.url, tls: {}, reconnect: false }));
    expect(messageOf(err)).toMatch(/tls/i);
    expect(isTlsError(err)).toBe(true);
  });

  it("connectFromEnv: a tls:// URL to a server without TLS says so in one line, not that no server is there", async () => {
    const saved = process.env.NATS_URL;
    process.env.NATS_URL = e2e.server.url.replace("nats:", "tls:");
    try {
      const err = await rejection(connectFromEnv("errors-test"));
      expect(err).toBeInstanceOf(UserError);
      expect(messageOf(err)).toMatch(
        /^TLS with nats-server at tls:\/\/127\.0\.0\.1:\d+ failed \(server does not support 'tls'\) — .*for a server without TLS, use a nats:\/\/ URL/,
      );
    } finally {
      if (saved === undefined) delete process.env.NATS_URL;
      else process.env.NATS_URL = saved;
    }
  });

  it("anything else is not", async () => {
    const err = await rejection(connect({ servers: "nats://127.0.0.1:1", reconnect: false, timeout: 1_000 }));
    expect(isTlsError(err)).toBe(false);
    expect(isTlsError(Object.assign(new Error("a code, not a TLS one"), { code: "ECONNRESET" }))).toBe(false);
  });
});

describe("an account without JetStream", () => {
  it("says JetStream is not enabled for it (10039), not that nothing answered", async () => {
    const nojs = await startServer({ config: "accounts { NOJS: { users: [ { user: nojs, password: nojs } ] } }" });
    const nc = await connect({ servers: nojs.url, user: "nojs", pass: "nojs" });
    try {
      const err = await rejection(jetstreamManager(nc));
      expect(isJetStreamNotEnabled(err)).toBe(true);
      expect(isNoResponders(err)).toBe(false);
      expect(explain(err)).toMatch(/^JetStream is not enabled for this account — enable it for the account/);
      const raw = answered(503, ApiCodes.JetStreamNotEnabledForAccount, "jetstream not enabled for account");
      expect(isJetStreamNotEnabled(raw)).toBe(true);
      expect(isJetStreamNotEnabled(new Error("other"))).toBe(false);
    } finally {
      await nc.close();
      await nojs.stop();
    }
  });
});

describe("explain: one line for what a person can fix", () => {
  const options = { jobs: { type: "string" as const } };
  const parsed = (args: string[]) => {
    try {
      parseArgs({ args, options, strict: true });
    } catch (err) {
      return err;
    }
    return expect.fail(`parseArgs took ${args.join(" ")}`);
  };

  it("each of parseArgs' complaints, in a line of our own", () => {
    expect(explain(parsed(["--no-such"]))).toBe("unknown option --no-such (see --help)");
    expect(explain(parsed(["--jobs", "-5"]))).toBe('--jobs takes a value: write one that starts with "-" as --jobs=<value> (see --help)');
    expect(explain(parsed(["--jobs"]))).toBe("--jobs needs a value (see --help)");
    const positional = parsed(["stray"]) as Error;
    expect(explain(positional)).toBe(`${positional.message.split("\n")[0]} (see --help)`);
  });

  it("a UserError as it is, anything else as `<name> failed: <message>`", () => {
    expect(explain(new UserError("set NATS_URL"))).toBe("set NATS_URL");
    expect(explain(new Error("boom"), "fanout")).toBe("fanout failed: boom");
    expect(explain("a string")).toBe("run failed: a string");
    expect(explain(Object.assign(new Error("coded"), { code: "ERR_OTHER" }))).toBe("run failed: coded");
  });
});
