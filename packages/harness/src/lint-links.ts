// Checks every relative link in the repo's Markdown files (the ones git tracks): the file or directory
// it names exists, and an anchor (#...) names a heading of the Markdown file it points at, as GitHub
// makes them. One line per broken link, exit 1 if there is any. Run by `pnpm lint`, so by `.ci/run` too.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { repoRoot } from "./binary.js";

/** Markdown's fenced code blocks, blanked line for line so line numbers stay. */
const unfenced = (text: string) => text.replace(/^```[\s\S]*?^```/gm, (block) => block.replace(/[^\n]/g, ""));

/** Markdown without its code: fenced blocks and inline code spans hold no links. */
const prose = (text: string) => unfenced(text).replace(/`[^`\n]*`/g, "");

/** The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as "-", repeats numbered. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, heading] of unfenced(markdown).matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const base = heading!
      .replace(/`/g, "")
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, "")
      .replace(/ /g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Headings are read with their code spans (GitHub keeps their text), links from the prose only. */
const headingsOf = (file: string) => anchors(readFileSync(file, "utf8"));

const files = execFileSync("git", ["ls-files", "--", "*.md"], { cwd: repoRoot, encoding: "utf8" }).split("\n").filter(Boolean);
let broken = 0;
for (const file of files) {
  const path = join(repoRoot, file);
  const lines = prose(readFileSync(path, "utf8")).split("\n");
  lines.forEach((line, i) => {
    for (const [, target] of line.matchAll(/\]\(<?([^)\s>]+)>?(?: "[^"]*")?\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target!)) continue; // https:, mailto:
      const [to, anchor] = target!.split("#") as [string, string | undefined];
      const resolved = to === "" ? path : join(dirname(path), decodeURIComponent(to));
      let why: string | undefined;
      if (!existsSync(resolved)) why = `${to} does not exist`;
      else if (anchor) {
        const md = statSync(resolved).isDirectory() ? join(resolved, "README.md") : resolved;
        if (md.endsWith(".md") && existsSync(md) && !headingsOf(md).has(anchor.toLowerCase()))
          why = `${relative(repoRoot, md)} has no heading #${anchor}`;
      }
      if (why) {
        broken++;
        process.stderr.write(`${file}:${i + 1}: the link ${target} is broken: ${why}\n`);
      }
    }
  });
}
if (broken > 0) process.exit(1);
process.stdout.write(`links: ${files.length} Markdown files, every relative link resolves\n`);
