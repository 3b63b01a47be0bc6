import type { Scenario } from "./chaos.js";
import { eventSourcing } from "./event-sourcing.js";
import { exactlyOnce } from "./exactly-once.js";
import { fanout } from "./fanout.js";
import { orderedReplay } from "./ordered-replay.js";
import { partitioned } from "./partitioned.js";
import { workQueue } from "./work-queue.js";

/** Every pattern with generated fault schedules, by name. */
export const scenarios: Record<string, Scenario<never>> = {
  "event-sourcing": eventSourcing as Scenario<never>,
  "exactly-once": exactlyOnce as Scenario<never>,
  fanout: fanout as Scenario<never>,
  "ordered-replay": orderedReplay as Scenario<never>,
  partitioned: partitioned as Scenario<never>,
  "work-queue": workQueue as Scenario<never>,
};
