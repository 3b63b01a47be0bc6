// Pausing and resuming the workers' consumer (nats-server 2.11+): while paused the server delivers no
// jobs to any worker (they stay queued; publishing goes on), e.g. during a downstream outage or a
// deploy. `pnpm run pause [minutes]` / `pnpm run resume` here, `npm run pause` / `npm run resume` in
// a starter. Without minutes a pause lasts until resumed (in practice: a year).
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connectFromEnv, intOption, isEntry, runMain, UserError, versionAtLeast } from "@repo/kit";
import { CONSUMER, STREAM } from "../setup.js";

const YEAR_MS = 365 * 24 * 3_600_000;

/** Consumer pause and resume exist from nats-server 2.11; older servers have no such API. */
export function checkPausable(version: string | undefined): void {
  if (!versionAtLeast(version, "2.11.0")) throw new UserError(`pausing a consumer needs nats-server >= 2.11; this server is ${version}`);
}

export async function pauseWorkers(jsm: JetStreamManager, version: string | undefined, forMs = YEAR_MS): Promise<Date> {
  checkPausable(version);
  const r = await jsm.consumers.pause(STREAM, CONSUMER, new Date(Date.now() + forMs));
  return new Date(r.pause_until ?? Date.now() + forMs);
}

export async function resumeWorkers(jsm: JetStreamManager, version: string | undefined): Promise<void> {
  checkPausable(version);
  await jsm.consumers.resume(STREAM, CONSUMER);
}

if (isEntry(import.meta.url)) {
  runMain("control", async () => {
    const [command, minutes] = process.argv.slice(2);
    if (command !== "pause" && command !== "resume") throw new UserError("usage: control pause [minutes] | resume");
    const nc = await connectFromEnv("work-queue-control");
    try {
      const jsm = await jetstreamManager(nc);
      if (command === "pause") {
        const until = await pauseWorkers(jsm, nc.info?.version, minutes ? intOption("minutes", minutes) * 60_000 : undefined);
        process.stdout.write(`paused ${STREAM}/${CONSUMER} until ${until.toISOString()}: no job is delivered until then or a resume\n`);
      } else {
        await resumeWorkers(jsm, nc.info?.version);
        process.stdout.write(`resumed ${STREAM}/${CONSUMER}: jobs are delivered again\n`);
      }
    } finally {
      await nc.close();
    }
  });
}
