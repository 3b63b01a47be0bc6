// pnpm mutate: mutation testing of the kit with Stryker (too slow for CI; the scores are in
// packages/kit-tests/README.md). Each mutant is run against the kit's own tests (packages/kit-tests,
// real nats-servers) that cover it. In place: the workspace links @repo/kit to packages/kit itself, so a
// sandbox copy would never be loaded; Stryker puts every file back when it ends (check `git status`
// after an interrupted run). MUTATE=packages/kit/src/errors.ts pnpm mutate runs one file.
// The property tests' names carry their seed (fast-check): without a fixed one, a test found in the dry
// run has another name in each mutant's run, is never run for it, and every mutant only it kills survives.
process.env.FC_SEED ??= "20261203";

const files = process.env.MUTATE?.split(",") ?? [
  "packages/kit/src/publisher.ts",
  "packages/kit/src/pulling.ts",
  "packages/kit/src/serve.ts",
  "packages/kit/src/errors.ts",
  "packages/kit/src/stream.ts",
];

// Reports by what was mutated: kit.json for the whole kit, errors.json for MUTATE=…/errors.ts, and so on.
const report = process.env.MUTATE ? files.map((f) => f.replace(/^.*\/|\.ts.*$/g, "")).join("+") : "kit";

export default {
  testRunner: "vitest",
  // pnpm keeps the runner out of the core's sight: name it by where it is.
  plugins: [import.meta.resolve("@stryker-mutator/vitest-runner")],
  vitest: { configFile: "packages/kit-tests/vitest.config.ts", related: false },
  mutate: files,
  inPlace: true,
  disableTypeChecks: false, // vitest does not type-check; else every source file gets a // @ts-nocheck in place
  // Two cores, but the kit's tests mostly wait (on ack_wait, expiries, restarts): two test processes
  // halve the time. STRYKER_CONCURRENCY=1 when nothing else may share the machine.
  concurrency: Number(process.env.STRYKER_CONCURRENCY ?? 2),
  coverageAnalysis: "perTest",
  timeoutMS: 10_000, // on top of 1.5 × the covering tests' own time: a mutant that hangs costs this much
  reporters: ["clear-text", "progress", "json"],
  jsonReporter: { fileName: `.cache/mutation/${report}.json` },
  tempDirName: ".cache/stryker-tmp",
  // A run again tests only the mutants whose code or covering tests changed since the last (FULL=1: all).
  incremental: !process.env.FULL,
  incrementalFile: `.cache/mutation/${report}-incremental.json`,
  cleanTempDir: "always",
  ignoreStatic: true,
  thresholds: { high: 90, low: 80, break: null },
};
