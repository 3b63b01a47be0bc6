// What the kit reads off the wire or from the environment, given inputs nobody writes by hand:
// random and malformed inputs give the right value or a clear error, never a crash or a wrong value.
// fast-check prints the seed and the shrunk input of a failure; FC_SEED=<seed> replays it.
import { fc, test } from "@fast-check/vitest";
import { ackInfo, jsonObject, MalformedPayload, optionsFromEnv, redactUrl, seqAtEnd, UserError, urlCredentials } from "@repo/kit";
import { describe, expect, it } from "vitest";

const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,24}$/);
const count = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const zeroOrMore = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
// The server's timestamp token: nanoseconds since 1970, 19 digits today (beyond a safe integer).
const nanosToken = fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }).map(String);

describe("ackInfo: the delivery count and sequence in a JetStream ack subject", () => {
  test.prop([token, token, count, count, zeroOrMore, nanosToken, zeroOrMore])(
    "reads both layouts the server sends (9 tokens, and from 2.10 with domain and account hash)",
    (stream, consumer, delivered, seq, cseq, time, pending) => {
      const tail = `${stream}.${consumer}.${delivered}.${seq}.${cseq}.${time}.${pending}`;
      expect(ackInfo(`$JS.ACK.${tail}`, stream, consumer)).toEqual({ delivered, seq });
      expect(ackInfo(`$JS.ACK._.ACCOUNTHASH.${tail}.r4nd0m`, stream, consumer)).toEqual({ delivered, seq });
      expect(ackInfo(`$JS.ACK.hub.ACCOUNTHASH.${tail}`, stream, consumer)).toEqual({ delivered, seq });
      expect(ackInfo(`$JS.ACK._.ACCOUNTHASH.${tail}.r4nd0m.more`, stream, consumer)).toEqual({ delivered, seq }); // tokens a later server may add
    },
  );

  it("reads an ack subject as nats-server sends it", () => {
    expect(ackInfo("$JS.ACK.JOBS.workers.3.1042.2210.1796306055559123456.17", "JOBS", "workers")).toEqual({ delivered: 3, seq: 1042 });
  });

  test.prop([token, token, token, count, count])(
    "is undefined for another stream's or consumer's ack subject",
    (stream, consumer, other, delivered, seq) => {
      fc.pre(other !== stream && other !== consumer);
      expect(ackInfo(`$JS.ACK.${other}.${consumer}.${delivered}.${seq}.1.1.0`, stream, consumer)).toBeUndefined();
      expect(ackInfo(`$JS.ACK.${stream}.${other}.${delivered}.${seq}.1.1.0`, stream, consumer)).toBeUndefined();
    },
  );

  // Close to an ack subject: its prefix and any tokens, or a real one with one token replaced.
  const nearAck = fc.oneof(
    fc
      .array(fc.oneof(token, fc.string({ maxLength: 6 }), fc.integer().map(String)), { maxLength: 14 })
      .map((t) => ["$JS", "ACK", ...t].join(".")),
    fc
      .tuple(
        fc.nat({ max: 8 }),
        fc.oneof(fc.constant(""), fc.constant("-1"), fc.constant("0"), fc.constant("1e3"), fc.constant("NaN"), fc.string()),
      )
      .map(([i, bad]) => {
        const t = ["$JS", "ACK", "S", "C", "2", "7", "7", "1", "0"];
        t[i] = bad;
        return t.join(".");
      }),
    fc.string(),
  );
  test.prop([nearAck])("is undefined or positive whole numbers for anything else, and never throws", (reply) => {
    const info = ackInfo(reply, "S", "C");
    if (info === undefined) return;
    expect(reply.startsWith("$JS.ACK.")).toBe(true);
    expect(Number.isSafeInteger(info.delivered) && info.delivered >= 1).toBe(true);
    expect(Number.isSafeInteger(info.seq) && info.seq >= 1).toBe(true);
  });
});

describe("seqAtEnd: the publisher's fast read of a publish answer", () => {
  const enc = new TextEncoder();
  const name = fc.string({ minLength: 1, maxLength: 32, unit: "grapheme" });
  const seq = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
  // What nats-server answers a publish, its fields in the order it writes them.
  const stored = fc.record({ stream: name, domain: fc.option(name, { nil: undefined }), seq });
  const other = fc.oneof(
    stored.map((a) => ({ ...a, duplicate: true })),
    stored.map((a) => ({ ...a, seq: 0 })),
    fc.record({
      error: fc.record({ code: fc.constantFrom(400, 429, 500, 503), err_code: fc.nat(), description: name }),
      stream: name,
      seq: fc.constant(0),
    }),
    fc.record({ error: fc.record({ code: fc.constantFrom(400, 503), description: name }) }),
  );
  const answer = (o: object) => enc.encode(JSON.stringify(o));

  test.prop([stored])("reads N from a stored ack, with a domain or without: no parse needed", (a) => {
    expect(seqAtEnd(answer(a))).toBe(a.seq);
  });

  test.prop([other])("is -1 for a duplicate, an error answer or a sequence 0: JSON.parse reads those", (a) => {
    expect(seqAtEnd(answer(a))).toBe(-1);
  });

  // A stored ack cut short, or with one byte changed: never a sequence the whole answer does not say.
  test.prop([stored, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()])(
    "gives a damaged ack's own sequence or -1, never another number",
    (a, at, byte, cut) => {
      const b = answer(a);
      const i = at % b.length;
      const damaged = cut ? b.slice(0, i) : b.map((x, k) => (k === i ? byte : x));
      const got = seqAtEnd(damaged);
      if (got === -1) return;
      const text = new TextDecoder().decode(damaged);
      expect(text.startsWith('{"stream":')).toBe(true);
      expect(got).toBe(Number(/"seq":(\d+)\}$/.exec(text)?.[1]));
      expect(got).toBeGreaterThan(0);
    },
  );

  // An ack with one byte of `"seq":N}` wrong: the damaged-ack property finds each only when its seed
  // damages that byte (Stryker's `k > 0` mutant, not checking the quote before seq, survived it).
  test.each(['{"stream":"S","xseq":5}', '{"stream":"S",seq":5}', '{"stream":"S","seq"5}', '{"stream":"S","seq":5'])(
    'is -1 for %s: it does not end with a whole "seq":N}',
    (text) => {
      expect(seqAtEnd(enc.encode(text))).toBe(-1);
    },
  );

  test.prop([fc.uint8Array({ maxLength: 64 })])("any bytes: -1 or a whole number the bytes end with", (b) => {
    const got = seqAtEnd(b);
    if (got === -1) return;
    expect(got).toBeGreaterThan(0);
    expect(got).toBe(Number(/"seq":(\d+)\}$/.exec(new TextDecoder().decode(b))?.[1]));
  });
});

describe("NATS_URL's user info, read as the NATS CLI (Go's net/url) reads it", () => {
  const scheme = fc.constantFrom("nats://", "tls://", "ws://", "");
  const host = fc
    .tuple(fc.constantFrom("127.0.0.1", "localhost", "nats.example.com", "[::1]"), fc.integer({ min: 1, max: 65535 }))
    .map(([h, p]) => `${h}:${p}`);
  const secret = fc.string({ minLength: 1, maxLength: 24, unit: "grapheme" });

  test.prop([scheme, host, secret, secret])(
    "percent-encoded user:password comes back exactly, and the log line has none of it",
    (s, h, user, pass) => {
      const url = `${s}${encodeURIComponent(user)}:${encodeURIComponent(pass)}@${h}`;
      expect(urlCredentials(url)).toEqual({ user, pass });
      expect(redactUrl(url)).toBe(`${s}${h}`);
    },
  );

  test.prop([scheme, host, secret])("a lone token comes back exactly, and the log line has none of it", (s, h, token) => {
    const url = `${s}${encodeURIComponent(token)}@${h}`;
    expect(urlCredentials(url)).toEqual({ token });
    expect(redactUrl(url)).toBe(`${s}${h}`);
  });

  // Not encoded: "@", ":", "/" and "%" as people type them. The user info ends at the last "@".
  const typed = fc.string({ minLength: 1, maxLength: 24, unit: fc.constantFrom("a", "Z", "9", "@", ":", "/", "%", "!", "#", "?", " ") });
  test.prop([scheme, host, typed])(
    "user info typed as is: the right credentials or a one-line error, and the log line has none of it",
    (s, h, info) => {
      fc.pre(s !== "" || !/^[a-z][a-z0-9+.-]*:\/\//i.test(info)); // else it is a scheme
      const url = `${s}${info}@${h}`;
      expect(redactUrl(url)).toBe(`${s}${h}`);
      let creds: ReturnType<typeof urlCredentials>;
      try {
        creds = urlCredentials(url);
      } catch (err) {
        expect(err).toBeInstanceOf(UserError);
        expect((err as Error).message).toBe('the user info in NATS_URL is not valid percent-encoding: write a "%" in a password as %25');
        expect(info).toContain("%"); // only a bad percent-encoding is refused
        return;
      }
      const colon = info.indexOf(":");
      if (colon < 0) expect(creds).toEqual({ token: decodeURIComponent(info) });
      else expect(creds).toEqual({ user: decodeURIComponent(info.slice(0, colon)), pass: decodeURIComponent(info.slice(colon + 1)) });
    },
  );

  // NATS_URL is a list: a "," typed in a password splits it there. What nats.js is given to dial is the
  // servers, exactly, or nothing (a one-line error that shows none of the password).
  const typedInList = fc.string({
    minLength: 1,
    maxLength: 24,
    unit: fc.constantFrom("a", "Z", "9", "@", ":", "/", "%", "!", "#", "?", " ", ","),
  });
  test.prop([typedInList, typedInList])(
    "a NATS_URL list dials exactly its servers, or is refused without a word of the password",
    (user, pass) => {
      fc.pre(!/^[a-z][a-z0-9+.-]*:\/\//i.test(user));
      const before = process.env.NATS_URL;
      process.env.NATS_URL = `nats://${user}:${pass}@h1:4222,tls://h2:4223`;
      try {
        expect(optionsFromEnv("t").servers).toEqual(["nats://h1:4222", "tls://h2:4223"]);
      } catch (err) {
        expect(err).toBeInstanceOf(UserError);
        expect((err as Error).message).toMatch(
          /^(NATS_URL's server \d of \d (is not \[scheme|has user info but no scheme)|the user info in NATS_URL is not valid percent-encoding)/,
        );
        expect((err as Error).message).not.toContain(`${user}:${pass}`);
      } finally {
        if (before === undefined) delete process.env.NATS_URL;
        else process.env.NATS_URL = before;
      }
    },
  );

  test.prop([scheme, host])("a URL without user info has no credentials and is logged as it is", (s, h) => {
    expect(urlCredentials(`${s}${h}`)).toBeUndefined();
    expect(redactUrl(`${s}${h}`)).toBe(`${s}${h}`);
  });
});

describe("jsonObject: a payload's JSON object, or a MalformedPayload", () => {
  const enc = new TextEncoder();
  test.prop([fc.jsonValue()])("any JSON value: the object itself when it is one, else MalformedPayload", (value) => {
    const data = enc.encode(JSON.stringify(value));
    if (typeof value === "object" && value !== null && !Array.isArray(value))
      expect(jsonObject(data)).toEqual(JSON.parse(JSON.stringify(value)));
    else expect(() => jsonObject(data)).toThrow(MalformedPayload);
  });

  test.prop([fc.uint8Array({ maxLength: 64 })])("any bytes: an object or MalformedPayload, nothing else", (data) => {
    try {
      const o = jsonObject(data);
      expect(typeof o === "object" && o !== null && !Array.isArray(o)).toBe(true);
    } catch (err) {
      expect(err).toBeInstanceOf(MalformedPayload);
    }
  });
});

describe("NATS_TIMEOUT: how long a connection's handshake may take, a Go duration as the NATS CLI takes it", () => {
  const timeoutFrom = (value: string | undefined) => {
    const before = process.env.NATS_TIMEOUT;
    if (value === undefined) delete process.env.NATS_TIMEOUT;
    else process.env.NATS_TIMEOUT = value;
    try {
      return optionsFromEnv("t").timeout;
    } finally {
      if (before === undefined) delete process.env.NATS_TIMEOUT;
      else process.env.NATS_TIMEOUT = before;
    }
  };

  test("is 5 s when unset, as the CLI's --timeout", () => {
    expect(timeoutFrom(undefined)).toBe(5_000);
  });

  test.each([
    ["5s", 5_000],
    ["1.5s", 1_500],
    ["500ms", 500],
    ["1m30s", 90_000],
    ["2h", 7_200_000],
    [".5s", 500],
    ["1500000us", 1_500],
    ["100us", 1], // under a millisecond: the least nats.js can wait, not 0 (which it reads as 20 s)
    ["596h", 2_145_600_000],
    ["2.007s", 2_007], // not 2008: 2.007 × 1000 is 2007.0000000000002 in floating point
  ])("reads %s as %d ms", (text, ms) => {
    expect(timeoutFrom(text)).toBe(ms);
  });

  // Hours, minutes, seconds and milliseconds in Go's order: the sum, in ms.
  test.prop([fc.nat(3), fc.nat(59), fc.nat(59), fc.nat(999)])("reads any XhYmZsNms as its sum", (h, m, s, ms) => {
    fc.pre(h + m + s + ms > 0);
    expect(timeoutFrom(`${h}h${m}m${s}s${ms}ms`)).toBe(((h * 60 + m) * 60 + s) * 1_000 + ms);
  });

  // 597h and more overflow a timer: Node would fire it at once.
  test.each(["5", "five", "-1s", "0s", "5 s", "s", "1x", "1s2", "597h", "100000h"])(
    "refuses %j in one line naming NATS_TIMEOUT, not as 20 s",
    (text) => {
      expect(() => timeoutFrom(text)).toThrow(UserError);
      expect(() => timeoutFrom(text)).toThrow(/^NATS_TIMEOUT must be a duration such as 5s, 500ms or 1m30s, got "/);
    },
  );
});
