// Jobs whose deliveries all die unanswered: the dlq-mover and its sweep move them to the DLQ, once.
import { jetstream } from "@nats-io/jetstream";
import { sleep, waitFor } from "@repo/harness";
import { describe, expect, it } from "vitest";
import { DlqHeaders, startDeadLetterMover } from "../src/dead-letter.js";
import { publishJobs } from "../src/producer.js";
import { CONSUMER, GRACE_DELIVERIES, STREAM } from "../src/setup.js";
import { dlqMessages, e2e, jobsNamed, retry, spawnWorkers, tally } from "./queue.js";

describe(`dead letters on nats-server ${process.env.NATS_SERVER_VERSION ?? "newest"}`, () => {
  it("dead-letters a job whose every delivery dies unacked (MAX_DELIVERIES advisory), so nothing is stranded", async () => {
    const moved: number[] = [];
    const mover = await startDeadLetterMover(e2e.nc, e2e.log, (seq) => moved.push(seq));
    try {
      // A worker that takes jobs and never answers: each delivery times out (a crash loop).
      const js = jetstream(e2e.nc);
      const sink = await (await js.consumers.get(STREAM, CONSUMER)).consume({ max_messages: 1 });
      const deliveries: number[] = [];
      const swallow = (async () => {
        for await (const m of sink) deliveries.push(m.info.deliveryCount);
      })();
      await publishJobs(e2e.nc, jobsNamed("crashloop", 1));
      await waitFor("the dlq-mover to move the job", () => moved.length === 1, { timeoutMs: 20_000 });
      await sink.close();
      await swallow;
      // The handler's tries, then the grace deliveries: all swallowed, so only the advisory is left.
      expect(deliveries).toEqual(Array.from({ length: retry.maxDeliver + GRACE_DELIVERIES }, (_, i) => i + 1));
      expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
      const dlq = await dlqMessages();
      expect(dlq.length).toBe(1);
      expect(dlq[0]!.header.get(DlqHeaders.By)).toBe("dlq-mover");
      expect(dlq[0]!.header.get(DlqHeaders.Deliveries)).toBe(String(retry.maxDeliver + GRACE_DELIVERIES));
      expect(dlq[0]!.json<{ id: string }>().id).toBe("crashloop-0");
    } finally {
      await mover.stop();
    }
  });

  it("dead-letters, without running the handler again, a job whose worker died on its last try", async () => {
    const t = tally();
    const tries: number[] = [];
    const conns = await spawnWorkers(
      3,
      async (_job, ctx) => {
        tries.push(ctx.delivery);
        if (ctx.delivery < retry.maxDeliver) throw new Error("fails");
        await byWorker.get(ctx.worker)!.close(); // this worker dies on the last try
        throw new Error("died");
      },
      t.onOutcome,
    );
    const byWorker = new Map(conns.map((c, i) => [`w${i + 1}`, c]));
    await publishJobs(e2e.nc, jobsNamed("last", 1));
    await waitFor("dead-lettered by a surviving worker", () => t.ids("dead_lettered").length === 1, { timeoutMs: 20_000 });
    expect(tries).toEqual(Array.from({ length: retry.maxDeliver }, (_, i) => i + 1)); // the handler never ran a 5th time
    const dead = t.outcomes.find((o) => o.kind === "dead_lettered")!;
    expect(dead.ctx.delivery).toBe(retry.maxDeliver + 1);
    expect(dead.job?.id).toBe("last-0");
    const dlq = await dlqMessages();
    expect(dlq).toHaveLength(1);
    expect(dlq[0]!.header.get(DlqHeaders.Reason)).toBe(`no ack after ${retry.maxDeliver} deliveries (a worker died or timed out)`);
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
  });

  it("sweeps a job that ran out of deliveries while no dlq-mover was listening into the DLQ, once", async () => {
    const js = jetstream(e2e.nc);
    const sink = await (await js.consumers.get(STREAM, CONSUMER)).consume({ max_messages: 1 });
    let deliveries = 0;
    const swallow = (async () => {
      for await (const _ of sink) deliveries++;
    })();
    await publishJobs(e2e.nc, jobsNamed("stranded", 1));
    await waitFor("max deliveries used up", () => deliveries === retry.maxDeliver + GRACE_DELIVERIES, { timeoutMs: 20_000 });
    await sleep(retry.ackWaitMs! + 300); // the last delivery's ack_wait runs out
    await sink.close();
    await swallow;
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(1); // stranded: no consumer will deliver it again

    const mover = await startDeadLetterMover(e2e.nc, e2e.log);
    try {
      expect(await mover.sweep()).toBe(1);
      expect(await mover.sweep()).toBe(0); // idempotent
    } finally {
      await mover.stop();
    }
    expect((await e2e.jsm.streams.info(STREAM)).state.messages).toBe(0);
    const dlq = await dlqMessages();
    expect(dlq.map((m) => m.json<{ id: string }>().id)).toEqual(["stranded-0"]);
  });
});
