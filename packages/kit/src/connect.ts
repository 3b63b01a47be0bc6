// Connecting the way the NATS CLI does, from the environment: NATS_URL (comma-separated for several
// servers; user info in a URL, user:password@ or token@, is used as credentials), NATS_USER/
// NATS_PASSWORD, NATS_TOKEN, NATS_CREDS (a creds file), NATS_NKEY (an nkey seed file), for TLS
// NATS_CA, NATS_CERT, NATS_KEY (PEM files) and tls:// URLs, and NATS_INBOX_PREFIX (the CLI's
// --inbox-prefix: where replies come, for a user allowed to subscribe only under its own prefix). A failure is one line that says what to do,
// and never shows a secret: URLs lose their user info, files are named, never read out.
import { readFileSync } from "node:fs";
import {
  connect,
  createInbox,
  credsAuthenticator,
  type NatsConnection,
  type NodeConnectionOptions,
  nkeyAuthenticator,
} from "@nats-io/transport-node";
import { isAuthError, isTimeout, isTlsError, messageOf, UserError } from "./errors.js";

export const DEFAULT_URL = "nats://127.0.0.1:4222";

// A URL's user info is everything between its scheme and its last "@", as Go's net/url (the NATS CLI)
// reads it: a password with an "@" or a ":" of its own, not percent-encoded, still works, and none of
// it is left in a log line.
const SCHEME_PART = String.raw`[a-z][a-z0-9+.-]*:\/\/`;
const SCHEME = new RegExp(`^${SCHEME_PART}`, "i");
function userInfo(url: string): { scheme: string; info: string; rest: string } | undefined {
  const scheme = SCHEME.exec(url)?.[0] ?? "";
  const at = url.lastIndexOf("@");
  if (at < scheme.length) return undefined;
  return { scheme, info: url.slice(scheme.length, at), rest: url.slice(at + 1) };
}

/** A server URL fit for a log line: without user info (user, password or token). */
export function redactUrl(url: string): string {
  const u = userInfo(url);
  return u ? u.scheme + u.rest : url;
}

/** NATS_URL's servers, as given (user info included: never log these, log redactUrl's). */
export const serversFromEnv = (): string[] => (process.env.NATS_URL || DEFAULT_URL).split(",").map((s) => s.trim());

function decoded(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    // Never the value itself: it is a secret.
    throw new UserError('the user info in NATS_URL is not valid percent-encoding: write a "%" in a password as %25');
  }
}

/** Credentials in a URL's user info, as the NATS CLI reads them: user:password, or a lone token. */
export function urlCredentials(url: string): { user: string; pass: string } | { token: string } | undefined {
  const info = userInfo(url)?.info;
  if (!info) return undefined;
  const colon = info.indexOf(":");
  if (colon < 0) return { token: decoded(info) };
  return { user: decoded(info.slice(0, colon)), pass: decoded(info.slice(colon + 1)) };
}

function readSecretFile(variable: string): Uint8Array {
  const path = process.env[variable] ?? "";
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UserError(`cannot read ${variable} (${path}): ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`);
  }
}

/** What is left of a server URL without its user info: [scheme://]host[:port], a host name, an IPv4 or a bracketed IPv6. */
const SERVER = new RegExp(String.raw`^(${SCHEME_PART})?(\[[0-9a-f:.]+\]|[^\s/:@[\],]+)(:\d{1,5})?\/?$`, "i");

/**
 * NATS_URL's servers without their user info, each checked: an unencoded "," in a password splits
 * NATS_URL there, and the piece before it would be a "server" holding part of the password.
 */
function serversToDial(urls: string[]): string[] {
  const firstSchemed = urls.findIndex((u) => SCHEME.test(u));
  return urls.map((url, i) => {
    // After a server with a scheme, one with user info and none is most likely a password's tail:
    // "nats://u:pa,ss@host" is "nats://u:pa" and "ss@host", and "pa" must not be dialled or printed.
    if (firstSchemed >= 0 && firstSchemed < i && !SCHEME.test(url) && userInfo(url))
      throw new UserError(
        `NATS_URL's server ${i + 1} of ${urls.length} has user info but no scheme, after one with a scheme: write a "," in a password as %2C, or give that server its scheme (nats://)`,
      );
    const server = redactUrl(url);
    if (!SERVER.test(server))
      throw new UserError(
        `NATS_URL's server ${i + 1} of ${urls.length} is not [scheme://][user:password@]host[:port] (a "," or "/" in a password is written %2C or %2F)`,
      );
    return server;
  });
}

/**
 * How long a connection's handshake may take: NATS_TIMEOUT, else 5 s. That is the NATS CLI's variable
 * and default for how long to wait on the server, in its format (a Go duration); the CLI applies it to
 * its requests, here it bounds the handshake only (JetStream API calls keep nats.js's own 5 s).
 * nats.js alone would wait 20 s, which is also how long a refusal it reports only as a timeout would
 * take: a server that verifies client certificates and gets none.
 */
export const CONNECT_TIMEOUT_MS = 5_000;

const DURATION_UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000_001 };

/** A Go duration as the NATS CLI reads NATS_TIMEOUT ("5s", "500ms", "1m30s"), in whole ms, more than 0. */
function timeoutFromEnv(): number {
  const text = process.env.NATS_TIMEOUT;
  if (!text) return CONNECT_TIMEOUT_MS;
  const parts = [...text.matchAll(/(\d+\.?\d*|\.\d+)(ms|us|µs|ns|h|m|s)/g)];
  // Under a millisecond is the least a timer waits (nats.js reads 0 as its 20 s); past 2^31-1 ms a
  // Node timer fires at once.
  const exact = parts.reduce((sum, [, n, unit]) => sum + Number(n) * DURATION_UNIT_MS[unit!]!, 0);
  const ms = Math.max(1, Math.round(exact)); // round, not ceil: 2.007s is 2007 ms, not 2008
  const tooLong = ms > 2 ** 31 - 1;
  if (parts.map((p) => p[0]).join("") !== text || !(exact > 0) || tooLong)
    throw new UserError(`NATS_TIMEOUT must be a duration such as 5s, 500ms or 1m30s, got "${text}"${tooLong ? " (at most 596h)" : ""}`);
  return ms;
}

/** The connection options the environment asks for (also what a test or a tool can inspect). */
export function optionsFromEnv(name: string): NodeConnectionOptions {
  const urls = serversFromEnv();
  const opts: NodeConnectionOptions = { servers: serversToDial(urls), name, timeout: timeoutFromEnv() };
  const fromUrl = urls.map(urlCredentials).find((c) => c !== undefined);
  if (fromUrl && "token" in fromUrl) opts.token = fromUrl.token;
  else if (fromUrl) Object.assign(opts, fromUrl);
  if (process.env.NATS_USER) {
    opts.user = process.env.NATS_USER;
    opts.pass = process.env.NATS_PASSWORD ?? "";
  }
  if (process.env.NATS_TOKEN) opts.token = process.env.NATS_TOKEN;
  if (process.env.NATS_CREDS) opts.authenticator = credsAuthenticator(readSecretFile("NATS_CREDS"));
  if (process.env.NATS_NKEY)
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(new TextDecoder().decode(readSecretFile("NATS_NKEY")).trim()));
  if (process.env.NATS_INBOX_PREFIX) opts.inboxPrefix = process.env.NATS_INBOX_PREFIX;
  const { NATS_CA: caFile, NATS_CERT: certFile, NATS_KEY: keyFile } = process.env;
  if (caFile || certFile || keyFile || urls.some((u) => u.startsWith("tls://"))) {
    opts.tls = { ...(caFile ? { caFile } : {}), ...(certFile ? { certFile } : {}), ...(keyFile ? { keyFile } : {}) };
  }
  return opts;
}

/**
 * A new inbox under the connection's own reply prefix (its inboxPrefix, else _INBOX), as nats.js
 * makes for its requests: for code that subscribes to replies itself (the publisher, the pullers).
 */
export function inboxFor(nc: NatsConnection): string {
  // The prefix is in the connection's options, which NatsConnection's type does not show.
  return createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
}

export async function connectFromEnv(name: string, extra: Partial<NodeConnectionOptions> = {}): Promise<NatsConnection> {
  const opts = { ...optionsFromEnv(name), ...extra };
  const where = serversFromEnv().map(redactUrl).join(",");
  try {
    return await connect(opts);
  } catch (err) {
    if (isAuthError(err)) {
      throw new UserError(
        `nats-server at ${where} refused the connection (${messageOf(err)}) — set NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY, or put user:password@ in NATS_URL`,
      );
    }
    // A server that verifies clients and gets no certificate drops the TLS connection; the client sees
    // only a timeout (an unreachable server is "connection refused" instead).
    if (isTlsError(err) || (opts.tls && isTimeout(err))) {
      throw new UserError(
        `TLS with nats-server at ${where} failed (${messageOf(err)}) — set NATS_CA to the server's CA, and NATS_CERT/NATS_KEY if it verifies clients; for a server without TLS, use a nats:// URL and leave NATS_CA, NATS_CERT and NATS_KEY unset`,
      );
    }
    // Unset, NATS_URL is the CLI's default: say so (in the repo, most often the server a demo started
    // for itself, gone with it; a starter runs no server of its own).
    const unset = process.env.NATS_URL ? "" : " (NATS_URL is unset, so this tried the default)";
    throw new UserError(`no nats-server at ${where} (${messageOf(err)})${unset} — start one (nats-server -js) and set NATS_URL to it`);
  }
}
