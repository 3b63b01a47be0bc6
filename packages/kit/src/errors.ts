// NATS errors told apart by their type and code (nats.js's classes, JetStream's API error codes),
// never by their message text.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import { errors, type NatsConnection } from "@nats-io/transport-node";

/**
 * JetStream API error codes this repo acts on. nats.js names some; the others are the server's own
 * (nats-server's server/errors.json), spelled here because nats.js has no name for them.
 */
export const ApiCodes = {
  ...JetStreamApiCodes,
  /** JSClusterNoPeersErrF "no suitable peers for placement": a new cluster whose peers are not all known yet. */
  ClusterNoPeers: 10005,
  /** JSStreamDuplicateMessageConflict (409): a message with this msg id is being stored right now (clustered streams, 2.11+). */
  DuplicateInProcess: 10158,
  /** JSStreamWrongLastSequenceConstantErr: an expected last sequence refused because that subject is being written right now (2.12+, clustered). */
  WrongLastSequenceInProcess: 10164,
} as const;

/** The JetStream API error code of `err`, if it is one. */
export const apiCode = (err: unknown): number | undefined => (err instanceof JetStreamApiError ? err.code : undefined);

/** The stream or consumer asked for does not exist. */
export function isNotFound(err: unknown): boolean {
  const code = apiCode(err);
  return code === ApiCodes.StreamNotFound || code === ApiCodes.ConsumerNotFound;
}

/** Walks an error and its causes: nats.js wraps the error that happened in others (RequestError, JetStreamNotEnabled). */
function findCause<T extends Error>(err: unknown, test: (e: Error) => e is T): T | undefined;
function findCause(err: unknown, test: (e: Error) => boolean): Error | undefined;
function findCause(err: unknown, test: (e: Error) => boolean): Error | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) if (test(e)) return e;
  return undefined;
}
const someCause = (err: unknown, test: (e: Error) => boolean): boolean => findCause(err, test) !== undefined;

export type Refusal = InstanceType<typeof errors.PermissionViolationError>;

/**
 * The publishes the server has refused this connection, by subject. A request is rejected with its
 * refusal by nats.js, but a plain publish (a pull request, a publish whose ack comes to a shared
 * inbox) is refused only in a connection status: those who make them look here.
 */
export function watchRefusals(nc: NatsConnection): { get(subject: string): Refusal | undefined; stop(): void } {
  const refused = new Map<string, Refusal>();
  const statuses = nc.status();
  void (async () => {
    for await (const s of statuses)
      if (s.type === "error" && s.error instanceof errors.PermissionViolationError && s.error.operation === "publish")
        refused.set(s.error.subject, s.error);
  })();
  return { get: (subject) => refused.get(subject), stop: () => (statuses as { stop?: () => void }).stop?.() };
}

/**
 * The server refused an operation this user's permissions do not allow: a publish (every JetStream
 * API call is a request to a $JS.API subject) or a subscription. nats.js rejects the request with it.
 */
export const permissionDenied = (err: unknown): Refusal | undefined =>
  findCause(err, (e): e is Refusal => e instanceof errors.PermissionViolationError);

/** Nothing listens on the subject: no stream (yet: a restarting server, a leader election), or no JetStream. */
export const isNoResponders = (err: unknown): boolean =>
  someCause(err, (e) => e instanceof errors.NoRespondersError || (e instanceof errors.RequestError && e.isNoResponders()));

export const isTimeout = (err: unknown): boolean => someCause(err, (e) => e instanceof errors.TimeoutError);

/**
 * Worth another try (with the same msg id, so it is stored once): no answer in time, no stream
 * answered yet, JetStream said 503 (unavailable for a moment) or 429 (its ingest queue was full), or
 * a message with this msg id is being stored right now (10158, clustered streams).
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof JetStreamApiError && (err.status === 503 || err.status === 429)) return true; // 429: a full ingest queue (2.11+)
  return apiCode(err) === ApiCodes.DuplicateInProcess || isNoResponders(err) || isTimeout(err);
}

/** The server refused our credentials (or they expired). */
export const isAuthError = (err: unknown): boolean =>
  someCause(err, (e) => e instanceof errors.AuthorizationError || e instanceof errors.UserAuthenticationExpiredError);

/**
 * TLS failed: Node's TLS errors carry OpenSSL's verify codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...) or
 * ERR_TLS_* / ERR_SSL_* codes (a server that wanted a client certificate answers with an alert). nats.js
 * reports a server without TLS, when TLS was asked for, as a ConnectionError "server does not support
 * 'tls'" (and a TLS upgrade that did not happen as an InvalidArgumentError about "tls"): no code of
 * their own, so the message is all there is.
 */
export function isTlsError(err: unknown): boolean {
  return someCause(err, (e) => {
    const code = String((e as { code?: unknown }).code ?? "");
    if (/^(ERR_TLS_|ERR_SSL_)|CERT|SELF_SIGNED|UNABLE_TO_(VERIFY|GET_ISSUER)|HOSTNAME/.test(code)) return true;
    return (e instanceof errors.ConnectionError || e instanceof errors.InvalidArgumentError) && /\btls\b/i.test(e.message);
  });
}

/** The server, or this account, has no JetStream. */
export const isJetStreamNotEnabled = (err: unknown): boolean =>
  someCause(err, (e) => e instanceof jserrors.JetStreamNotEnabled || apiCode(e) === ApiCodes.JetStreamNotEnabledForAccount);

export const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** An error whose message is the whole story: printed as one line, no stack trace. */
export class UserError extends Error {}

/** Node's parseArgs reports unknown or malformed options with ERR_PARSE_ARGS_* codes. */
const isBadArgs = (err: unknown) => err instanceof Error && String((err as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS");

/** parseArgs' complaint, in one line of our own (its messages run to three lines, and differ by Node version). */
function badArgs(err: Error): string {
  const option = /'(-[^' ]+)/.exec(err.message)?.[1];
  const code = (err as { code?: unknown }).code;
  if (option && code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown option ${option} (see --help)`;
  if (option && err.message.includes("ambiguous"))
    return `${option} takes a value: write one that starts with "-" as ${option}=<value> (see --help)`;
  if (option && err.message.includes("argument missing")) return `${option} needs a value (see --help)`;
  return `${err.message.split("\n")[0]} (see --help)`;
}

/** What a failed run says, in one line: the error's own words, or what to do about a failure we recognise. */
export function explain(err: unknown, name = "run"): string {
  const text = err instanceof Error ? err.message : String(err);
  const denied = permissionDenied(err);
  if (denied) {
    const what = denied.operation === "publish" ? "publish to" : "subscribe to";
    if (denied.operation !== "publish" && denied.subject.startsWith("_INBOX"))
      return `not permitted: this user may not subscribe to ${denied.subject}, where its replies would come — set NATS_INBOX_PREFIX to the inbox prefix it may read (nats/roles.conf: _INBOX.<user>)`;
    return `not permitted: this user may not ${what} ${denied.subject} — run this step as a user whose permissions allow it (each pattern's README lists its roles)`;
  }
  if (err instanceof UserError) return text;
  if (isBadArgs(err)) return badArgs(err as Error);
  if (isJetStreamNotEnabled(err) && isNoResponders(err)) {
    return "no JetStream answered: is it enabled on this server? Start nats-server with -js (or jetstream {} in its config)";
  }
  if (isJetStreamNotEnabled(err)) {
    return "JetStream is not enabled for this account — enable it for the account on the server (jetstream: enabled in its accounts block, or JetStream limits in its account JWT)";
  }
  return `${name} failed: ${text}`;
}
