// R3 against R1 on a local 3-node cluster (the harness's, file storage): the publisher and the work
// queue, each with its streams at 1 and at 3 replicas on the same cluster in the same run, so the ratio
// is the cost of replication alone. Each run gets a fresh stream; the two are interleaved.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startCluster } from "@repo/harness";
import { createPublisher, placed } from "@repo/kit";
import { PAYLOAD } from "./baselines.js";
import { type Context, interleaved, timed } from "./measure.js";
import { natsQueue } from "./queues.js";

export async function replicatedBenches(ctx: Context, version: string): Promise<void> {
  const cluster = await startCluster({ version });
  const nc = await connect({ servers: cluster.url.split(","), name: "bench-r3" });
  const jsm = await jetstreamManager(nc);
  const on = { ...ctx, nc, url: cluster.url };
  const n = ctx.quick ? 2_000 : 100_000;
  const saved = process.env.NATS_REPLICAS;
  try {
    let batch = 0;
    const publish = async (replicas: number) => {
      await jsm.streams.delete("BENCH_R").catch(() => undefined);
      await placed(() => jsm.streams.add({ name: "BENCH_R", subjects: ["benchr.>"], storage: "file" as never, num_replicas: replicas }));
      const publisher = createPublisher(nc, { stream: "BENCH_R" });
      const run = `${Date.now().toString(36)}-${batch++}`;
      function* messages() {
        for (let i = 0; i < n; i++) yield { subject: "benchr.pub", data: PAYLOAD, id: `${run}-${i}` };
      }
      // Timed from the first publish to the last ack: creating the stream (an R3 placement) is not.
      const r = await timed(async () => (await publisher.publishAll(messages())).stored);
      publisher.close();
      return r;
    };
    // The work queue's setup creates its streams with NATS_REPLICAS copies, as in production.
    const queue = async (replicas: number) => {
      process.env.NATS_REPLICAS = String(replicas);
      return natsQueue(on, n);
    };
    const r = await interleaved(ctx.quick ? 1 : 3, {
      pub1: () => publish(1),
      pub3: () => publish(3),
      queue1: () => queue(1),
      queue3: () => queue(3),
    });
    for (const [k, v] of Object.entries(r)) ctx.expect(`replicated ${k}`, v.count, n);
    ctx.record({ name: "publisher.r1", what: "the publisher into an R1 file stream on the 3-node cluster", ...r.pub1 });
    ctx.record({ name: "publisher.r3", what: "the same into an R3 file stream", ...r.pub3, ratioOf: "publisher.r1" });
    ctx.record({ name: "work-queue.r1", what: "the work-queue pattern with R1 streams on the 3-node cluster", ...r.queue1 });
    ctx.record({ name: "work-queue.r3", what: "the same with R3 streams", ...r.queue3, ratioOf: "work-queue.r1" });
  } finally {
    if (saved === undefined) delete process.env.NATS_REPLICAS;
    else process.env.NATS_REPLICAS = saved;
    await nc.close();
    await cluster.stop();
  }
}
