// CI's budget of generated fault schedules: ten per pattern (run on one Node line), a new seed each time
// (printed; CHAOS_SEED=<seed> runs the same ones). `pnpm chaos <pattern> --runs N` soaks for longer.
import fc from "fast-check";
import { expect, it } from "vitest";
import { chaos, type Scenario } from "../src/chaos.js";
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

// The runner itself, with a model that needs no server: a schedule breaks it when it holds a 7.
it("prints the shrunk schedule that broke the model with its own violations, and a replay that breaks it again", async () => {
  const lines: string[] = [];
  const sevens: Scenario<number> = {
    name: "sevens",
    model: "no step is 7",
    steps: fc.array(fc.nat(9), { minLength: 1, maxLength: 8 }),
    run: async (steps) => ({ violations: steps.includes(7) ? [`a 7 among ${steps.length} step(s)`] : [], counts: {}, faults: {} }),
  };
  const report = await chaos(sevens, { runs: 100, seed: 42, print: (l) => lines.push(l) });
  const steps = report.failure?.steps ?? [];
  expect(steps).toContain(7);
  expect(steps.length).toBeLessThanOrEqual(2); // shrunk (fast-check does not always reach the smallest)
  expect(report.violations).toBeGreaterThan(1); // the first failure and the shrinks that still broke it
  expect(report.failure?.violations).toEqual([`a 7 among ${steps.length} step(s)`]);
  expect(lines).toContain(`  violated: a 7 among ${steps.length} step(s)`);
  const [seed, path] = /--seed (\S+) --path (\S+)$/.exec(report.failure?.replay ?? "")!.slice(1);
  const again = await chaos(sevens, { runs: 100, seed: Number(seed), path, print: () => {} });
  expect(again.schedules).toBe(1);
  expect(again.failure?.steps).toEqual(steps);
});
