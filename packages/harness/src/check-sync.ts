// Every pattern carries its own copy of src/nats.ts so its folder works when copied out. This check
// keeps the copies identical: edit one, copy it to the others (the message says how).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./binary.js";
import { patternNames } from "./patterns.js";

const files = patternNames().map((name) => join("patterns", name, "src/nats.ts"));
const reference = files[0]!;
const text = readFileSync(join(repoRoot, reference), "utf8");
const differ = files.filter((f) => readFileSync(join(repoRoot, f), "utf8") !== text);
if (differ.length > 0) {
  process.stderr.write(`error: ${differ.join(", ")} differ from ${reference}: make them identical (e.g. for f in ${differ.join(" ")}; do cp ${reference} $f; done)\n`);
  process.exit(1);
}
process.stdout.write(`src/nats.ts is identical in ${files.length} patterns\n`);
