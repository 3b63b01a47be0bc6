// Small helpers for e2e tests: bounded waiting and unique names.
import { explain, MalformedPayload } from "@repo/kit";
import { cachedVersions } from "./binary.js";
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  { timeoutMs = 15_000, everyMs = 25, detail }: { timeoutMs?: number; everyMs?: number; detail?: () => unknown } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      const more = detail ? `: ${JSON.stringify(await detail())}` : "";
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${more}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What the pattern says, in one line, when `attempt` fails (the kit's explain), or "allowed" when it succeeds. */
export async function refusal(attempt: Promise<unknown>): Promise<string> {
  try {
    await attempt;
    return "allowed";
  } catch (err) {
    return explain(err);
  }
}

/**
 * For property tests of a payload parser: `value` sent as JSON and parsed, with what was sent as the
 * receiver reads it; undefined when the parser refused it as a MalformedPayload (any other error fails).
 */
export function parseSent<T>(parse: (data: Uint8Array) => T, value: unknown): { parsed: T; sent: Record<string, unknown> } | undefined {
  const json = JSON.stringify(value) ?? "null";
  try {
    return { parsed: parse(new TextEncoder().encode(json)), sent: JSON.parse(json) };
  } catch (err) {
    if (err instanceof MalformedPayload) return undefined;
    throw err;
  }
}

/**
 * True when this run's server (NATS_SERVER_VERSION, as the matrix sets it) is not the newest cached:
 * a test of what does not depend on the server's version (argument parsing, signals, credentials
 * conventions, files written) then skips, and runs once, on the newest.
 */
export const olderServer = (): boolean => {
  const v = process.env.NATS_SERVER_VERSION;
  const newest = process.env.MATRIX_NEWEST || cachedVersions().at(-1); // the matrix's newest, else the cache's
  return Boolean(v) && newest !== undefined && newest !== v && !newest.startsWith(`${v}.`);
};
