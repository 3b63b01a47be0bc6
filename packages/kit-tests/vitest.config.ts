// The kit's tests as `pnpm test` runs them (its script's flags), also for `pnpm mutate` (Stryker).
import { defineConfig } from "vitest/config";

export default defineConfig({
  root: import.meta.dirname,
  test: { testTimeout: 60_000, hookTimeout: 30_000, setupFiles: ["test/fixtures/fc-seed.ts"] },
});
