// The topology of dedup publish, declared in one place: one PAYMENTS stream whose duplicate_window
// is how long the server remembers a Nats-Msg-Id.
import { type JetStreamManager, RetentionPolicy, StorageType, type StreamConfig } from "@nats-io/jetstream";
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

/**
 * Creates the stream, or checks that the existing one fits. With `windowMs` (the demo, which shows
 * the window's edge) an existing stream must have that window: it is reported, never changed.
 * Without it (the service) the window is the operator's choice. Idempotent.
 */
export async function setup(jsm: JetStreamManager, windowMs?: number): Promise<void> {
  const keys: (keyof StreamConfig)[] = ["retention", "storage", ...(windowMs === undefined ? [] : ["duplicate_window" as const])];
  await ensureStream(jsm, paymentsStream(windowMs ?? DEFAULT_WINDOW_MS), keys);
}
