import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Tests start real Python processes; the slowest (property runs) set their own budget.
    testTimeout: 60_000,
    hookTimeout: 30_000,
  },
})
