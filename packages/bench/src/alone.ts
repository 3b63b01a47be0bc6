// `node --expose-gc --import tsx src/alone.ts <benchmark> <url> <count>`: one benchmark whose client
// memory is judged, in a process of its own (measure.ts's inFreshProcess starts it), so the heap it
// measures holds nothing from the benchmarks before it. Prints one JSON line (AloneReport).
import { connect } from "@nats-io/transport-node";
import type { AloneReport, Context, Sample } from "./measure.js";
import { orderedReplayRun } from "./patterns.js";
import { natsQueue } from "./queues.js";

const benchmarks: Record<string, (ctx: Context, count: number) => Promise<Sample & { rssMb: number[] }>> = {
  "ordered-replay": orderedReplayRun,
  "work-queue": (ctx, count) => natsQueue(ctx, count, { rssWhileRunning: true }),
};

const [name = "", url = "", count = "0"] = process.argv.slice(2);
const run = benchmarks[name];
if (!run) {
  process.stderr.write(`error: no benchmark "${name}" to run alone (have ${Object.keys(benchmarks).join(", ")})\n`);
  process.exit(2);
}
const nc = await connect({ servers: url.split(","), name: `bench-${name}` });
const problems: AloneReport["problems"] = [];
const ctx: Context = {
  nc,
  url,
  quick: false,
  n: Number(count),
  rates: new Map(),
  record: () => {
    throw new Error("alone.ts reports to its parent; it records nothing");
  },
  expect: (what, got, wanted) => void (got !== wanted && problems.push({ what, got, wanted })),
};
const r = await run(ctx, Number(count));
await nc.close();
process.stdout.write(`${JSON.stringify({ ...r, problems } satisfies AloneReport)}\n`);
