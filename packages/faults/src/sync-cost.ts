// The cost of fsync on every write: acked publishes per second against one nats-server with the
// default lazy fsync and with sync_interval: always, measured in the same run (ratios, not absolutes).
//   pnpm --dir packages/faults sync-cost [messages]
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startServer } from "@repo/harness";

const count = Number(process.argv[2] ?? 20_000);
const payload = new Uint8Array(128);

async function rate(sync: "default" | "always"): Promise<number> {
  const server = await startServer({ sync });
  const nc = await connect({ servers: server.url });
  await (await jetstreamManager(nc)).streams.add({ name: "SYNC", subjects: ["sync.>"], storage: "file" as never });
  const js = jetstream(nc);
  const window = 256;
  const start = performance.now();
  for (let i = 0; i < count; i += window) {
    await Promise.all(Array.from({ length: Math.min(window, count - i) }, () => js.publish("sync.x", payload)));
  }
  const perSec = count / ((performance.now() - start) / 1000);
  await nc.close();
  await server.stop();
  return perSec;
}

const rows: [string, number][] = [];
for (const round of [1, 2]) {
  for (const sync of ["default", "always"] as const) rows.push([`${sync} (round ${round})`, await rate(sync)]);
}
const avg = (s: string) => rows.filter(([k]) => k.startsWith(s)).reduce((a, [, v]) => a + v, 0) / 2;
for (const [k, v] of rows) console.log(`${k.padEnd(20)} ${Math.round(v)} msg/s`);
console.log(
  `sync_interval: always / default = ${(avg("always") / avg("default")).toFixed(2)} (${count} acked 128-byte publishes, 256 in flight)`,
);
