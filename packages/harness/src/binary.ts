// Finds a nats-server binary: NATS_SERVER_BIN, else the project cache (provisioned from Debian's
// packages on a miss), else a nats-server on PATH.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { compareVersions } from "@repo/kit";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const cacheDir = process.env.NATS_SERVER_CACHE ?? join(repoRoot, ".cache/nats-server");
const provisionScript = join(repoRoot, "packages/harness/bin/provision-nats-server.sh");

export interface ServerBinary {
  path: string;
  version: string;
}

export { compareVersions };

/** Versions in the project cache, oldest first. */
export function cachedVersions(): string[] {
  if (!existsSync(cacheDir)) return [];
  return readdirSync(cacheDir)
    .filter((v) => /^\d+\.\d+\.\d+/.test(v) && existsSync(join(cacheDir, v, "nats-server")))
    .sort(compareVersions);
}

export function binaryVersion(path: string): string {
  const out = execFileSync(path, ["--version"], { encoding: "utf8" });
  return out.trim().replace(/^nats-server:\s*v?/, "");
}

function fromCache(wanted: string | undefined): ServerBinary | undefined {
  const versions = cachedVersions();
  const match = wanted ? versions.filter((v) => v === wanted || v.startsWith(`${wanted}.`)).at(-1) : versions.at(-1);
  return match ? { path: join(cacheDir, match, "nats-server"), version: match } : undefined;
}

function fromPath(wanted: string | undefined): ServerBinary | undefined {
  const which = spawnSync("sh", ["-c", "command -v nats-server"], { encoding: "utf8" });
  const path = which.stdout.trim();
  if (which.status !== 0 || !path) return undefined;
  const version = binaryVersion(path);
  if (wanted && version !== wanted && !version.startsWith(`${wanted}.`)) return undefined;
  return { path, version };
}

/** The Debian suite that packages nats-server `wanted` (provision-nats-server.sh): bookworm 2.9, trixie 2.10, sid the newest. */
export function suiteFor(wanted: string | undefined): string {
  if (wanted && /^2\.9(\.|$)/.test(wanted)) return "bookworm";
  if (wanted && /^2\.10(\.|$)/.test(wanted)) return "trixie";
  return "sid";
}

/** True when findServerBinary needs no download (NATS_SERVER_BIN, or the version in the cache). */
export const serverAtHand = (wanted = process.env.NATS_SERVER_VERSION || undefined): boolean =>
  Boolean(process.env.NATS_SERVER_BIN) || fromCache(wanted) !== undefined;

/** Resolves the binary for NATS_SERVER_VERSION (default: the newest available). */
export function findServerBinary(wanted = process.env.NATS_SERVER_VERSION || undefined): ServerBinary {
  const explicit = process.env.NATS_SERVER_BIN;
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`NATS_SERVER_BIN=${explicit} does not exist`);
    return { path: explicit, version: binaryVersion(explicit) };
  }
  const cached = fromCache(wanted);
  if (cached) return cached;
  // Only the one wanted, and said while it happens: the first run fetches a package from Debian.
  const suite = suiteFor(wanted);
  process.stderr.write(`nats-server ${wanted ?? "(newest)"} is not in .cache yet: fetching it from Debian ${suite}, once\n`);
  const provisioned = spawnSync("bash", [provisionScript, suite], { stdio: ["ignore", 2, "pipe"], encoding: "utf8" });
  const found = fromCache(wanted) ?? fromPath(wanted);
  if (found) return found;
  const have = cachedVersions();
  const why = provisioned.status !== 0 ? ` (provisioning failed: ${provisioned.stderr.trim()})` : "";
  throw new Error(
    `no nats-server ${wanted ?? ""} available${why}; available: ${have.join(", ") || "none"} — set NATS_SERVER_BIN or NATS_SERVER_VERSION`,
  );
}
