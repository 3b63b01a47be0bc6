// nats-server versions, for features that need a minimum one ("priority groups need 2.11").

/** Numeric compare of "2.10.4"-style versions (a "-beta" suffix counts as a further number). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((p) => Number.parseInt(p, 10) || 0);
  const pb = b.split(/[.-]/).map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** True when `version` (e.g. nc.info.version) is `min` or newer; an unknown version is not. */
export function versionAtLeast(version: string | undefined, min: string): boolean {
  return version !== undefined && compareVersions(version, min) >= 0;
}
