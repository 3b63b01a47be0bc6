// Scheduled jobs with JetStream message schedules (nats-server 2.12+; ADR-51): a schedule is a message
// on its own subject (schedule.<name>) with a Nats-Schedule header; when it is due the server publishes
// a copy to the schedule's target, a job subject (due.<name>), in the same stream. The runners' consumer
// reads only due.>: a schedule message is never delivered to a worker, so no ack can delete it.
//   - @at <time>: once (2.12+), then the server removes the schedule.
//   - @every <interval> and cron with a time zone: again and again (2.14+), until cancelled.
//   - the newest message on a schedule subject is the schedule: publishing it again replaces it (debounce).
//   - cancelling is purging its subject.
import { AckPolicy, type ConsumerConfig, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ensureConsumer, ensureStream, type StreamSpec, UserError, versionAtLeast } from "@repo/kit";

export const STREAM = "SCHEDULED";
export const SCHEDULE_PREFIX = "schedule";
export const DUE_PREFIX = "due";
export const CONSUMER = "runners";

/** What this server can schedule: one-off jobs from 2.12, recurring ones (@every, cron, time zones) from 2.14. */
export interface Support {
  at: boolean;
  recurring: boolean;
}
export const support = (version: string | undefined): Support => ({
  at: versionAtLeast(version, "2.12.0"),
  recurring: versionAtLeast(version, "2.14.0"),
});

export const scheduledStream: StreamSpec = {
  name: STREAM,
  subjects: [`${SCHEDULE_PREFIX}.>`, `${DUE_PREFIX}.>`],
  // A job is removed once a runner acks it; schedules are never consumed, so they stay until they
  // are done (@at) or cancelled.
  retention: RetentionPolicy.Workqueue,
  storage: StorageType.File, // schedules survive a server restart
  allow_msg_schedules: true,
};

export const runnersConsumer: Partial<ConsumerConfig> = {
  durable_name: CONSUMER,
  filter_subject: `${DUE_PREFIX}.>`, // the jobs only, never the schedules
  ack_policy: AckPolicy.Explicit,
  ack_wait: nanos(30_000),
  max_deliver: 5,
};

/**
 * Creates the stream and the runners' consumer, or checks them. Refuses, in one line, a server without
 * message schedules: an older server would accept the stream and silently drop allow_msg_schedules.
 */
export async function setup(jsm: JetStreamManager, version: string | undefined): Promise<Support> {
  const can = support(version);
  if (!can.at) {
    throw new UserError(
      `scheduled jobs need nats-server >= 2.12 (message schedules; @every, cron and time zones: 2.14); this server is ${version}`,
    );
  }
  const config = await ensureStream(jsm, scheduledStream, ["retention", "storage", "allow_msg_schedules"]);
  if (!config.allow_msg_schedules) {
    throw new UserError(
      `stream ${STREAM} has no allow_msg_schedules on nats-server ${version}: delete it ("nats stream rm ${STREAM}") so it is made again`,
    );
  }
  await ensureConsumer(jsm, STREAM, runnersConsumer);
  return can;
}
