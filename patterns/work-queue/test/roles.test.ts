// The pattern run by its least-privilege roles (nats/roles.conf): each does its job, and is refused
// another's with a line that names what it may not do.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notPermitted, refusal, rolesForTests, waitFor } from "@repo/harness";
import { storedMessages } from "@repo/kit";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { startDeadLetterMover } from "../src/dead-letter.js";
import { encodeJob, publishJobs } from "../src/producer.js";
import { CONSUMER, DLQ_STREAM, type RetryPolicy, STREAM, setup } from "../src/setup.js";
import { type Outcome, startWorker } from "../src/worker.js";

const retry: RetryPolicy = { backoffMs: [200, 200], maxDeliver: 2 };
const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const roles = rolesForTests();
const as = (user: string) => roles.as(user);
const manager = (user: string) => roles.manager(user);

describe("work-queue roles (nats/roles.conf)", () => {
  it("admin sets up, the producer enqueues, workers process and dead-letter, the dlq mover moves: every job accounted for", async () => {
    await setup(await jetstreamManager(await as("admin")), retry);
    const outcomes: Outcome[] = [];
    const handler = async (job: { id: string }) => {
      if (job.id.startsWith("poison")) throw new Error("cannot process");
    };
    const onOutcome = (o: Outcome) => void outcomes.push(o);
    const worker = await startWorker({ nc: await as("work-queue-worker"), name: "w", handler, log, retry, confirmAcks: true, onOutcome });
    const moved: number[] = [];
    const mover = await startDeadLetterMover(await as("work-queue-dlq"), log, (seq) => moved.push(seq));
    const producer = await as("work-queue-producer");
    const jobs = [...Array.from({ length: 20 }, (_, i) => `good-${i}`), "poison-0"].map((id) => encodeJob({ id, task: "resize" }));
    expect(await publishJobs(producer, jobs)).toMatchObject({ stored: 21, failed: 0 });
    const ended = () => outcomes.filter((o) => o.kind !== "retry");
    await waitFor("every job processed or dead-lettered", () => ended().length === 21);
    expect(outcomes.filter((o) => o.kind === "processed").length).toBe(20);
    expect(outcomes.filter((o) => o.kind === "dead_lettered").map((o) => o.job?.id)).toEqual(["poison-0"]);
    await worker.stop();

    // A job whose every delivery dies unacked (a stuck worker, as the worker role): the mover moves it.
    const stuck = await (await jetstream(await as("work-queue-worker")).consumers.get(STREAM, CONSUMER)).consume({ max_messages: 1 });
    const swallow = (async () => {
      for await (const _ of stuck); // takes each delivery and never answers
    })();
    await publishJobs(producer, [encodeJob({ id: "stuck-0", task: "resize" })]);
    await waitFor("the dlq mover moved the stuck job", () => moved.length === 1);
    await stuck.close();
    await swallow;
    await mover.stop();
    const admin = await jetstreamManager(await as("admin"));
    expect((await storedMessages(admin, DLQ_STREAM)).map((m) => JSON.parse(m.string()).id)).toEqual(["poison-0", "stuck-0"]);
    expect((await admin.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("keeps each role's replies its own: the producer cannot read the jobs a worker pulls", async () => {
    await setup(await jetstreamManager(await as("admin")), retry);
    const spy = await as("work-queue-producer");
    const seen: string[] = [];
    const sub = spy.subscribe("_INBOX.>", { callback: (err, m) => void (!err && seen.push(m.subject)) });
    const outcomes: Outcome[] = [];
    const worker = await startWorker({
      nc: await as("work-queue-worker"),
      name: "w",
      handler: async () => {},
      log,
      retry,
      onOutcome: (o) => void outcomes.push(o),
    });
    await publishJobs(
      spy,
      Array.from({ length: 10 }, (_, i) => encodeJob({ id: `secret-${i}`, task: "resize" })),
    );
    await waitFor("the worker processed the jobs", () => outcomes.length === 10);
    await worker.stop();
    expect(seen).toEqual([]);
    expect(await sub.closed).toBeInstanceOf(Error); // the server refused the subscription
  });

  it("refuses the producer consuming, purging and deleting", async () => {
    const jsm = await manager("work-queue-producer");
    expect(await refusal(jetstream(await as("work-queue-producer")).consumers.get(STREAM, CONSUMER))).toMatch(
      notPermitted(`$JS.API.CONSUMER.INFO.${STREAM}.${CONSUMER}`),
    );
    expect(await refusal(jsm.streams.purge(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${STREAM}`));
    expect(await refusal(jsm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
  });

  it("refuses the worker deleting or purging the stream, changing the consumer, removing a message or enqueueing", async () => {
    const jsm = await manager("work-queue-worker");
    expect(await refusal(jsm.streams.delete(STREAM))).toMatch(notPermitted(`$JS.API.STREAM.DELETE.${STREAM}`));
    expect(await refusal(jsm.streams.purge(DLQ_STREAM))).toMatch(notPermitted(`$JS.API.STREAM.PURGE.${DLQ_STREAM}`));
    expect(await refusal(jsm.consumers.update(STREAM, CONSUMER, { max_deliver: 100 }))).toMatch(/^not permitted: .*\$JS\.API\.CONSUMER\./);
    expect(await refusal(jsm.streams.deleteMessage(STREAM, 1))).toMatch(notPermitted(`$JS.API.STREAM.MSG.DELETE.${STREAM}`));
    const enqueue = publishJobs(await as("work-queue-worker"), [encodeJob({ id: "forged", task: "resize" })]);
    expect(await refusal(enqueue)).toMatch(/not published, e\.g\. forged: not permitted: this user may not publish to jobs\.resize — /);
  });

  it("refuses the dlq mover pulling jobs (a worker run as it stops with one line) or deleting a stream", async () => {
    const lines: string[] = [];
    const logged = pino({ level: "error" }, { write: (l: string) => void lines.push(JSON.parse(l).msg) });
    await publishJobs(await as("work-queue-producer"), [encodeJob({ id: "stays", task: "resize" })]);
    const worker = await startWorker({ nc: await as("work-queue-dlq"), name: "w", handler: async () => {}, log: logged, retry });
    await waitFor("the worker's refusal", () => lines.length > 0);
    expect(lines).toEqual([expect.stringMatching(notPermitted(`$JS.API.CONSUMER.MSG.NEXT.${STREAM}.${CONSUMER}`))]);
    await worker.stop();
    expect(await refusal((await manager("work-queue-dlq")).streams.delete(DLQ_STREAM))).toMatch(
      notPermitted(`$JS.API.STREAM.DELETE.${DLQ_STREAM}`),
    );
  });
});
