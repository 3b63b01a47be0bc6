// The kit's publisher against every refusal a stream can answer a publish with (nats-server's
// server/errors.json, the answers processJetStreamMsg sends): each one is an error on that message,
// publishBatch rejects, and what the publisher calls stored is in the stream, read back.
import type { StreamConfig } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { serverForTests } from "@repo/harness";
import { createPublisher, type OutgoingMessage, publishBatch, storedMessages, versionAtLeast } from "@repo/kit";
import { describe, expect, it } from "vitest";

const e2e = serverForTests();
let n = 0;

const version = () => e2e.nc.info?.version ?? "0.0.0";
const hdrs = (entries: Record<string, string>) => {
  const h = headers();
  for (const [k, v] of Object.entries(entries)) h.set(k, v);
  return h;
};

interface Refusal {
  name: string;
  /** The server that first answers so; older ones store the message or ignore the header. */
  since?: string;
  /** The JetStream err_code of the answer (errors.json), or 503 for the no-responders status. */
  code: number;
  stream?: Partial<StreamConfig>;
  /** Runs once the stream exists, before the refused publish (fill it, seal it). */
  before?: (stream: string, subject: string) => Promise<void>;
  msg: (subject: string) => Omit<OutgoingMessage, "subject"> & { subject?: string };
  /** The publisher's own `stream` option (Nats-Expected-Stream). */
  expect?: string;
  /** A passing refusal (a 503: room or a stream may come): sent again until its attempts run out. */
  passing?: true;
}

const big = new Uint8Array(64);
const refusals: Refusal[] = [
  { name: "expected stream does not match", code: 10060, expect: "SOMEONE_ELSE", msg: () => ({ data: big }) },
  { name: "message size exceeds maximum", code: 10054, stream: { max_msg_size: 16 }, msg: () => ({ data: big }) },
  {
    name: "header size exceeds maximum",
    code: 10097,
    msg: () => ({ data: big, headers: hdrs({ "X-Big": "h".repeat(70_000) }) }),
  },
  {
    name: "wrong last sequence",
    code: 10071,
    msg: () => ({ data: big, headers: hdrs({ "Nats-Expected-Last-Sequence": "99" }) }),
  },
  {
    name: "wrong last subject sequence",
    code: 10071,
    msg: () => ({ data: big, headers: hdrs({ "Nats-Expected-Last-Subject-Sequence": "99" }) }),
  },
  {
    name: "wrong last msg id",
    code: 10070,
    before: async (_s, subject) => void (await publishBatch(e2e.nc, [{ subject, data: big, id: "first" }], { what: "seed" })),
    msg: () => ({ data: big, headers: hdrs({ "Nats-Expected-Last-Msg-Id": "not-the-last" }) }),
  },
  {
    name: "sealed stream",
    code: 10109,
    // Sealing is a stream update nats.js's update type does not list.
    before: async (stream) => void (await e2e.jsm.streams.update(stream, { sealed: true } as Partial<StreamConfig>)),
    msg: () => ({ data: big }),
  },
  {
    name: "maximum messages exceeded (discard new)",
    passing: true,
    code: 10077,
    stream: { max_msgs: 1, discard: "new" as StreamConfig["discard"] },
    before: async (_s, subject) => void (await publishBatch(e2e.nc, [{ subject, data: big }], { what: "seed" })),
    msg: () => ({ data: big }),
  },
  {
    name: "maximum bytes exceeded (discard new)",
    passing: true,
    code: 10077,
    stream: { max_bytes: 1024, discard: "new" as StreamConfig["discard"] },
    msg: () => ({ data: new Uint8Array(2048) }),
  },
  {
    name: "maximum messages per subject exceeded (discard new per subject)",
    passing: true,
    since: "2.10.0",
    code: 10077,
    stream: { max_msgs_per_subject: 1, discard: "new" as StreamConfig["discard"], discard_new_per_subject: true },
    before: async (_s, subject) => void (await publishBatch(e2e.nc, [{ subject, data: big }], { what: "seed" })),
    msg: () => ({ data: big }),
  },
  {
    name: "per-message TTL is disabled",
    since: "2.11.0",
    code: 10166,
    msg: () => ({ data: big, headers: hdrs({ "Nats-TTL": "1m" }) }),
  },
  {
    name: "invalid per-message TTL",
    since: "2.11.0",
    code: 10165,
    stream: { allow_msg_ttl: true },
    msg: () => ({ data: big, headers: hdrs({ "Nats-TTL": "soon" }) }),
  },
  {
    name: "message counters are disabled",
    since: "2.12.0",
    code: 10168,
    msg: () => ({ data: new Uint8Array(0), headers: hdrs({ "Nats-Incr": "1" }) }),
  },
  {
    name: "message schedules are disabled",
    since: "2.12.0",
    code: 10188,
    msg: (subject) => ({ data: big, headers: hdrs({ "Nats-Schedule": "@every 1m", "Nats-Schedule-Target": subject }) }),
  },
  {
    name: "atomic publish is disabled",
    since: "2.12.0",
    code: 10174,
    msg: () => ({ data: big, headers: hdrs({ "Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "1", "Nats-Batch-Commit": "1" }) }),
  },
  { name: "no stream listens (no responders)", code: 503, passing: true, msg: (subject) => ({ data: big, subject: `${subject}-nowhere` }) },
];

async function streamFor(r: Refusal) {
  const name = `REFUSE_${++n}`;
  const subject = `refuse.${n}`;
  await e2e.jsm.streams.add({ name, subjects: [subject], ...r.stream });
  await r.before?.(name, subject);
  const { state } = await e2e.jsm.streams.info(name);
  return { name, subject, before: state.last_seq };
}

describe(`the publisher's refusals on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  for (const r of refusals) {
    it(`reports "${r.name}" (${r.code}) as an error on that message, never as stored`, async (ctx) => {
      if (r.since && !versionAtLeast(version(), r.since)) return ctx.skip(`needs nats-server ${r.since}`);
      const s = await streamFor(r);
      const { subject = s.subject, ...rest } = r.msg(s.subject);
      const publisher = createPublisher(e2e.nc, { stream: r.expect ?? s.name, attempts: 2, timeoutMs: 1_000 });
      try {
        const result = await publisher.publish({ subject, ...rest });
        expect(result.error, JSON.stringify(result)).toBeTruthy();
        expect(result.error).not.toMatch(/^error \d+$/); // the server's own words
        expect(result.code).toBe(r.code);
        expect(result.seq).toBe(0);
        // A lasting refusal is not sent again; a passing one is, until its attempts run out.
        expect(result.attempts).toBe(r.passing ? 2 : 1);
      } finally {
        publisher.close();
      }
      // Nothing of it was stored.
      expect((await e2e.jsm.streams.info(s.name)).state.last_seq).toBe(s.before);
    });

    it(`publishBatch rejects on "${r.name}" and what it stored around it is in the stream`, async (ctx) => {
      if (r.since && !versionAtLeast(version(), r.since)) return ctx.skip(`needs nats-server ${r.since}`);
      const s = await streamFor(r);
      const { subject = s.subject, ...rest } = r.msg(s.subject);
      const results: { stored: boolean; seq: number }[] = [];
      const batch: OutgoingMessage[] = [{ subject, ...rest }];
      const done = publishBatch(e2e.nc, batch, { what: "messages", stream: r.expect ?? s.name, attempts: 2, timeoutMs: 1_000 }, (res) =>
        results.push({ stored: !res.error, seq: res.seq }),
      );
      await expect(done).rejects.toThrow(/1 messages not published/);
      expect(results).toEqual([{ stored: false, seq: 0 }]);
      expect((await e2e.jsm.streams.info(s.name)).state.last_seq).toBe(s.before);
    });
  }

  it("sends a publish refused by a full discard-new stream again, and stores it once there is room", async () => {
    const name = `REFUSE_${++n}`;
    const subject = `room.${n}`;
    await e2e.jsm.streams.add({ name, subjects: [subject], max_msgs: 1, discard: "new" as StreamConfig["discard"] });
    await publishBatch(e2e.nc, [{ subject, data: big }], { what: "seed", stream: name });
    const publisher = createPublisher(e2e.nc, { stream: name });
    try {
      const pending = publisher.publish({ subject, data: big, id: "waits-for-room" });
      await new Promise((r) => setTimeout(r, 150)); // refused once at least (the next try is 100 ms later)
      await e2e.jsm.streams.purge(name); // a consumer of a work queue acks, room comes
      const result = await pending;
      expect(result.error, JSON.stringify(result)).toBeUndefined();
      expect(result.attempts).toBeGreaterThan(1);
      expect((await storedMessages(e2e.jsm, name)).map((m) => [m.seq, m.header.get("Nats-Msg-Id")])).toEqual([
        [result.seq, "waits-for-room"],
      ]);
    } finally {
      publisher.close();
    }
  });

  it("sends a publish no stream answered (503) again, and stores it once the stream exists", async () => {
    const name = `REFUSE_${++n}`;
    const subject = `later.${n}`;
    const publisher = createPublisher(e2e.nc);
    try {
      const pending = publisher.publish({ subject, data: big, id: "before-its-stream" });
      await new Promise((r) => setTimeout(r, 150));
      await e2e.jsm.streams.add({ name, subjects: [subject] });
      const result = await pending;
      expect(result.error, JSON.stringify(result)).toBeUndefined();
      expect(result.attempts).toBeGreaterThan(1);
      expect((await storedMessages(e2e.jsm, name)).map((m) => m.seq)).toEqual([result.seq]);
    } finally {
      publisher.close();
    }
  });

  it("reports a copy of a msg id as a duplicate, with the stored message's sequence, stored once", async () => {
    const name = `REFUSE_${++n}`;
    const subject = `copy.${n}`;
    await e2e.jsm.streams.add({ name, subjects: [subject] });
    const publisher = createPublisher(e2e.nc, { stream: name });
    try {
      const first = await publisher.publish({ subject, data: big, id: "one" });
      const copy = await publisher.publish({ subject, data: big, id: "one" });
      expect(first).toMatchObject({ duplicate: false, error: undefined });
      expect(copy).toMatchObject({ duplicate: true, error: undefined, seq: first.seq });
      expect((await storedMessages(e2e.jsm, name)).map((m) => m.seq)).toEqual([first.seq]);
    } finally {
      publisher.close();
    }
  });

  // Something that is not a stream answers the subject (a core service, a stray responder): whatever
  // it says, the message is not called stored.
  for (const [what, answer] of [
    ["an answer that is not JSON", "OK"],
    ["a JSON answer without a sequence", "{}"],
    ["an error without a description", '{"error":{"code":500}}'],
  ] as const) {
    it(`reports ${what} from something that is not a stream as an error, never as stored`, async () => {
      const subject = `notastream.${++n}`;
      const responder = e2e.nc.subscribe(subject, { callback: (_e, m) => void m.respond(answer) });
      const publisher = createPublisher(e2e.nc);
      try {
        const result = await publisher.publish({ subject, data: big });
        expect(result).toMatchObject({ seq: 0, duplicate: false, attempts: 1 });
        expect(result.error).toMatch(/^(unreadable ack: OK|ack without a sequence: \{\}|error 500)$/);
      } finally {
        publisher.close();
        responder.unsubscribe();
      }
    });
  }

  it("stores the good messages of a batch and fails only the refused ones, each read back", async () => {
    const name = `REFUSE_${++n}`;
    await e2e.jsm.streams.add({ name, subjects: [`mixed.${n}.>`], max_msg_size: 256 }); // headers count too
    const small = (i: number) => new TextEncoder().encode(`m${i}`);
    // Every third message is too large for the stream.
    const msgs = Array.from({ length: 30 }, (_, i) => ({
      subject: `mixed.${n}.${i}`,
      id: `m${i}`,
      data: i % 3 === 0 ? new Uint8Array(512) : small(i),
    }));
    const stored = new Map<number, number>();
    const failed: number[] = [];
    const publisher = createPublisher(e2e.nc, { stream: name });
    const tally = await publisher.publishAll(msgs, (res, i) => (res.error ? failed.push(i) : stored.set(i, res.seq)));
    publisher.close();
    expect(tally, JSON.stringify(tally)).toMatchObject({ stored: 20, failed: 10 });
    expect(failed.sort((a, b) => a - b)).toEqual(msgs.map((_, i) => i).filter((i) => i % 3 === 0));
    const inStream = await storedMessages(e2e.jsm, name);
    expect(inStream.map((m) => [m.seq, m.subject])).toEqual(
      [...stored].sort(([, a], [, b]) => a - b).map(([i, seq]) => [seq, msgs[i]!.subject]),
    );
  });
});
