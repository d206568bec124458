import { expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { readmePath, withMethodTable } from "../scripts/docs.ts"

it("the README's method table is the one generated from Rpcs (run `deno task docs`)", () => {
  const readme = readFileSync(readmePath, "utf8")
  expect(readme).toBe(withMethodTable(readme))
})
