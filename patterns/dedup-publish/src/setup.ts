// The topology of dedup publish, declared in one place: one PAYMENTS stream whose duplicate_window
// is how long the server remembers a Nats-Msg-Id.
import { type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ensureStream, type StreamSpec } from "@repo/kit";

export const STREAM = "PAYMENTS";
export const SUBJECT_PREFIX = "payments";

/** The server's default window; retries of one message must all happen within it. */
export const DEFAULT_WINDOW_MS = 2 * 60_000;

export function paymentsStream(windowMs: number): StreamSpec {
  return {
    name: STREAM,
    subjects: [`${SUBJECT_PREFIX}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File, // remembered ids are rebuilt from the stored messages after a restart
    duplicate_window: nanos(windowMs), // a msg id seen within this window is acked as a duplicate, not stored
  };
}

/** Creates the stream, or checks it and sets the window asked for. Idempotent. */
export async function setup(jsm: JetStreamManager, windowMs = DEFAULT_WINDOW_MS): Promise<void> {
  const want = paymentsStream(windowMs);
  const config = await ensureStream(jsm, want);
  if (config.duplicate_window !== want.duplicate_window)
    await jsm.streams.update(STREAM, { ...config, duplicate_window: want.duplicate_window });
}
