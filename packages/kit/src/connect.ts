// Connecting the way the NATS CLI does, from the environment: NATS_URL (comma-separated for several
// servers; user info in a URL, user:password@ or token@, is used as credentials), NATS_USER/
// NATS_PASSWORD, NATS_TOKEN, NATS_CREDS (a creds file), NATS_NKEY (an nkey seed file), and for TLS
// NATS_CA, NATS_CERT, NATS_KEY (PEM files) and tls:// URLs. A failure is one line that says what to do,
// and never shows a secret: URLs lose their user info, files are named, never read out.
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions, nkeyAuthenticator } from "@nats-io/transport-node";
import { UserError } from "./cli.js";
import { isAuthError, isTimeout, isTlsError, messageOf } from "./errors.js";

export const DEFAULT_URL = "nats://127.0.0.1:4222";

const USER_INFO = /^([a-z]+:\/\/)?([^/@]*)@/i;

/** A server URL fit for a log line: without user info (user, password or token). */
export function redactUrl(url: string): string {
  return url.replace(USER_INFO, (_, scheme: string | undefined) => scheme ?? "");
}

/** NATS_URL's servers, as given (user info included: never log these, log redactUrl's). */
export const serversFromEnv = (): string[] => (process.env.NATS_URL || DEFAULT_URL).split(",").map((s) => s.trim());

/** Credentials in a URL's user info, as the NATS CLI reads them: user:password, or a lone token. */
export function urlCredentials(url: string): { user: string; pass: string } | { token: string } | undefined {
  const info = USER_INFO.exec(url)?.[2];
  if (!info) return undefined;
  const at = info.indexOf(":");
  if (at < 0) return { token: decodeURIComponent(info) };
  return { user: decodeURIComponent(info.slice(0, at)), pass: decodeURIComponent(info.slice(at + 1)) };
}

function readSecretFile(variable: string): Uint8Array {
  const path = process.env[variable] ?? "";
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UserError(`cannot read ${variable} (${path}): ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`);
  }
}

/** The connection options the environment asks for (also what a test or a tool can inspect). */
export function optionsFromEnv(name: string): NodeConnectionOptions {
  const urls = serversFromEnv();
  const opts: NodeConnectionOptions = { servers: urls.map(redactUrl), name };
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
  const { NATS_CA: caFile, NATS_CERT: certFile, NATS_KEY: keyFile } = process.env;
  if (caFile || certFile || keyFile || urls.some((u) => u.startsWith("tls://"))) {
    opts.tls = { ...(caFile ? { caFile } : {}), ...(certFile ? { certFile } : {}), ...(keyFile ? { keyFile } : {}) };
  }
  return opts;
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
        `TLS with nats-server at ${where} failed (${messageOf(err)}) — set NATS_CA to the server's CA, and NATS_CERT/NATS_KEY if it verifies clients`,
      );
    }
    throw new UserError(`no nats-server at ${where} (${messageOf(err)}) — run "docker compose up -d" or set NATS_URL`);
  }
}
