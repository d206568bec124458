import { expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { readFileSync, rmSync, writeFileSync } from "node:fs"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { readmePath, withMethodTable } from "../scripts/docs.ts"

const readme = readFileSync(readmePath, "utf8")

it("the README's method table is the one generated from Rpcs (run `deno task docs`)", () => {
  expect(readme).toBe(withMethodTable(readme))
})

it("the README's usage example runs as written", () => {
  const example = /## Usage\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  expect(example).toBeDefined()
  // Beside the README, so its `./src/mod.ts` import resolves as a reader's copy would.
  const path = fileURLToPath(new URL("../.readme-example.ts", import.meta.url))
  writeFileSync(path, example!)
  try {
    const output = execFileSync(process.execPath, ["run", "-A", path], { encoding: "utf8", timeout: 60_000 })
    expect(output).toMatch(/^reference-softmax 1 \{/)
    expect(output).toContain("loss")
  } finally {
    rmSync(path, { force: true })
  }
})
