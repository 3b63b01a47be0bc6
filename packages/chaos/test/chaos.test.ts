// CI's budget of generated fault schedules: ten per pattern (run on one Node line), a new seed each time
// (printed; CHAOS_SEED=<seed> runs the same ones). `pnpm chaos <pattern> --runs N` soaks for longer.
import { expect, it } from "vitest";
import { chaos } from "../src/chaos.js";
import { scenarios } from "../src/scenarios.js";

const runs = Number(process.env.CHAOS_RUNS ?? 10);
const seed = process.env.CHAOS_SEED === undefined ? undefined : Number(process.env.CHAOS_SEED);

for (const [name, scenario] of Object.entries(scenarios))
  it.skipIf(scenario.notInCi !== undefined)(`${name}: ${runs} generated fault schedules keep the model (${scenario.model})`, async () => {
    // No new schedule after a minute: five scenarios stay within about 6 minutes on a slow machine.
    const report = await chaos(scenario, { runs, seed, timeLimitMs: 60_000 });
    const why = report.failure && `${report.failure.violations.join("; ")} — replay: ${report.failure.replay}`;
    expect(why, `seed ${report.seed}`).toBeUndefined();
    expect(report.schedules).toBeGreaterThan(0);
  });
