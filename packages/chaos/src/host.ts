// A worker process for fault schedules (pool.ts): loads every role's code, says it is warm, then runs
// the role named in the first line on stdin. Later lines are commands: {"cmd": "close"} closes the
// connection as a network fault would, then connects again; any other goes to the role. It prints JSON lines on stdout and ends
// when stdin does (the schedule's process went away).
import { writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { Line } from "./pool.js";
import { roles } from "./roles.js";

// Written at once (not queued in the stream): a line printed before an ack must not be lost to a SIGKILL after it.
const out = (l: Line) => writeSync(1, `${JSON.stringify(l)}\n`);
out({ warm: true });

let started: Awaited<ReturnType<(typeof roles)[string]>> | undefined;
for await (const text of createInterface({ input: process.stdin })) {
  const line = JSON.parse(text) as Line & { name: string; role: string; url: string };
  if (started) {
    if (line.cmd === "close") await started.close();
    else void started.command?.(line); // runs alongside the next lines, as requests do
    continue;
  }
  const role = roles[line.role];
  if (!role) throw new Error(`no role ${line.role}`);
  const connection = (): Promise<NatsConnection> =>
    connect({
      servers: line.url.split(","), // a cluster's nodes, the first one first (a replay meets the same)
      noRandomize: true,
      name: line.name,
      reconnectTimeWait: 100,
      maxReconnectAttempts: -1,
      // A silent link is noticed within seconds, not minutes.
      pingInterval: 1_000,
      maxPingOut: 3,
      timeout: 2_000,
      waitOnFirstConnect: true, // a connection made while the server restarts waits for it
    });
  started = await role(line, connection, out);
  out({ ready: line.name });
}
process.exit(0);
