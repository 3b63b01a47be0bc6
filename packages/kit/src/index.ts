// The kit: the runtime code every pattern of jetstream-patterns shares, in one place (packages/kit).
// `pnpm run new` copies these files into a starter's src/kit/ and points the pattern's imports there.
export { CHECK_OPTIONS_ONLY, demoOptions, type IntSpec, intOption, isEntry, runMain } from "./cli.js";
export { connectFromEnv, DEFAULT_URL, inboxFor, optionsFromEnv, redactUrl, serversFromEnv, urlCredentials } from "./connect.js";
export {
  ApiCodes,
  apiCode,
  explain,
  isAuthError,
  isJetStreamNotEnabled,
  isNoResponders,
  isNotFound,
  isTimeout,
  isTlsError,
  isTransient,
  messageOf,
  permissionDenied,
  type Refusal,
  UserError,
  watchRefusals,
} from "./errors.js";
export { createLogger, flushLogs, type Logger, logSummary } from "./log.js";
export { jsonObject, MalformedPayload } from "./payload.js";
export {
  createPublisher,
  type OutgoingMessage,
  type Publisher,
  type PublisherOptions,
  type PublishResult,
  publishBatch,
  seqAtEnd,
  type Tally,
} from "./publisher.js";
export {
  ackInfo,
  Delivery,
  type Hand,
  type Puller,
  type PullerOptions,
  pullIntoSlots,
  type SlotsOptions,
  startPulling,
} from "./pulling.js";
export { nextStored, storedMessages } from "./read.js";
export { type PullOptions, pull, pullRefusals, type Serving, type Stoppable, sentTogether, terminate } from "./serve.js";
export { type Running, runService, stopWithin } from "./service.js";
export { ensureConsumer, ensureStream, placed, replicas, type StreamSpec } from "./stream.js";
export { compareVersions, versionAtLeast } from "./version.js";
