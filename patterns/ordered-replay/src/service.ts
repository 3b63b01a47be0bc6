// The projector service a starter deploys (`npm start`; the demo is `npm run demo`): SERVICE_NAME
// (default projector) replays the ledger in order from its saved position, then follows new events,
// handing each to handleEntry and saving its position (every CHECKPOINT_EVERY events, default 100, and
// when it stops) until SIGTERM or SIGINT; then it exits 0. Run one instance per name: a replay is not
// shared; a restart resumes at exactly the next sequence (repeating at most the events since the last
// checkpoint). The kit's runService gives the connection, HEALTH_PORT's /healthz and the stop.
import { jetstreamManager } from "@nats-io/jetstream";
import { intOption, isEntry, runService, stopWithin } from "@repo/kit";
import { type Entry, loadPosition, replay } from "./replayer.js";
import { setup } from "./setup.js";

export const handleEntry = async (_entry: Entry): Promise<void> => {};

if (isEntry(import.meta.url)) {
  runService("ordered-replay-service", async (nc, log) => {
    const name = process.env.SERVICE_NAME ?? "projector";
    const checkpointEvery = intOption("CHECKPOINT_EVERY", process.env.CHECKPOINT_EVERY ?? "100");
    const positions = await setup(await jetstreamManager(nc), nc);
    const stopping = new AbortController();
    const replaying = replay({
      nc,
      name,
      positions,
      from: "resume",
      follow: true,
      signal: stopping.signal,
      checkpointEvery,
      log,
      handler: async (e) => {
        await handleEntry(e);
        log.info({ seq: e.seq, subject: e.subject }, "event");
      },
    });
    replaying.catch((err: unknown) => log.error({ err: String(err) }, "replay stopped"));
    log.info({ projector: name, from: await loadPosition(positions, name) }, "following the ledger");
    return {
      stop: async (deadlineMs) => {
        stopping.abort(); // saves the position of the last event handled
        await stopWithin(
          replaying.then(() => undefined),
          deadlineMs,
          log,
        );
      },
      health: async () => ({ projector: name, position: await loadPosition(positions, name) }),
    };
  });
}
