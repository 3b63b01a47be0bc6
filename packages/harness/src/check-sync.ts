// Every pattern carries its own copies of src/nats.ts and src/publisher.ts so its folder works when
// copied out. This check keeps the copies identical: edit one, copy it to the others (the message says how).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./binary.js";
import { patternNames } from "./patterns.js";

let failed = false;
for (const file of ["src/nats.ts", "src/publisher.ts"]) {
  const files = patternNames().map((name) => join("patterns", name, file));
  const reference = files[0]!;
  const text = readFileSync(join(repoRoot, reference), "utf8");
  const differ = files.filter((f) => readFileSync(join(repoRoot, f), "utf8") !== text);
  if (differ.length > 0) {
    process.stderr.write(`error: ${differ.join(", ")} differ from ${reference}: make them identical (e.g. for f in ${differ.join(" ")}; do cp ${reference} $f; done)\n`);
    failed = true;
  } else process.stdout.write(`${file} is identical in ${files.length} patterns\n`);
}
if (failed) process.exit(1);
