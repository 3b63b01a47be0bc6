import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./binary.js";

/** The runnable patterns: folders under patterns/ with a src/main.ts. */
export function patternNames(): string[] {
  const dir = join(repoRoot, "patterns");
  return readdirSync(dir)
    .filter((name) => existsSync(join(dir, name, "src/main.ts")))
    .sort();
}
