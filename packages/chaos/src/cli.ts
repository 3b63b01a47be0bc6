// pnpm chaos <pattern> [--runs N] [--seed S [--path P]] [--minutes M] [--cluster]
// Runs generated fault schedules against real nats-server and worker processes (NATS_SERVER_VERSION,
// else the newest in .cache), checks each against the pattern's model, and exits 1 if one broke it,
// printing the shrunk schedule and the command that runs it again.
import { parseArgs } from "node:util";
import { intOption, UserError } from "@repo/kit";
import { chaos } from "./chaos.js";

const usageOf = (
  patterns: string[],
) => `usage: pnpm chaos <${patterns.join(" | ")}> [--runs N] [--seed S [--path P]] [--minutes M] [--cluster]
  --runs N     schedules to generate (default 20)
  --seed S     the seed of an earlier run: the same schedules again (with the same --cluster)
  --path P     with --seed: the one failing schedule a run printed
  --minutes M  stop generating after M minutes (a soak: --runs 100000 --minutes 60)
  --cluster    a 3-node cluster with R3 streams; a node is killed or cut off instead of the server`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      runs: { type: "string" },
      seed: { type: "string" },
      path: { type: "string" },
      minutes: { type: "string" },
      cluster: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  // Read when the scenarios make their steps (at import) and by setup (the streams' replicas); set
  // either way, so that neither comes from the environment without --cluster in the replay line.
  process.env.CHAOS_CLUSTER = values.cluster ? "1" : "0";
  process.env.NATS_REPLICAS = values.cluster ? "3" : "1";
  const { scenarios } = await import("./scenarios.js");
  const usage = usageOf(Object.keys(scenarios));
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const scenario = scenarios[positionals[0] ?? ""];
  if (!scenario || positionals.length !== 1) throw new UserError(usage);
  if (values.path && !values.seed) throw new UserError("--path needs the --seed it was printed with");
  const report = await chaos(scenario, {
    runs: intOption("--runs", values.runs ?? "20"),
    seed: values.seed === undefined ? undefined : intOption("--seed", values.seed, -(2 ** 31)),
    path: values.path,
    flags: values.cluster ? "--cluster" : undefined,
    timeLimitMs: values.minutes ? intOption("--minutes", values.minutes) * 60_000 : undefined,
  });
  return report.failure ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `error: ${err instanceof UserError ? err.message : `chaos failed: ${err instanceof Error ? err.message : String(err)}`}\n`,
    );
    process.exit(err instanceof UserError ? 2 : 1);
  },
);
