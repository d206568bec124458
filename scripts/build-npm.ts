/**
 * `deno task build:npm`, first step: the npm package's sources in `npm/`.
 * Copies `src/` to `npm/src/` and writes `npm/package.json` (name, version
 * and license from deno.json; our exact versions of the three npm
 * dependencies; `type: module`, which makes `tsc` compile the copy as ESM).
 * README and LICENSE go along. The task's second step, the `typescript`
 * package's `tsc -p tsconfig.build.json` (NodeNext, type declarations,
 * relative `.ts` imports rewritten to `.js`), compiles it into `npm/dist/`.
 */
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const out = join(root, "npm")
const deno = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as {
  name: string
  version: string
  license: string
  imports: Record<string, string>
}

/** `npm:name@1.2.3` -> `1.2.3`. */
const versionOf = (name: string): string => {
  const specifier = deno.imports[name]
  const match = specifier === undefined ? null : /^npm:(?:@[^/]+\/)?[^@]+@(.+)$/.exec(specifier)
  if (match === null) throw new Error(`deno.json imports has no npm version for ${name}: ${specifier}`)
  return match[1]
}

export const packageJson = {
  name: deno.name,
  version: deno.version,
  description: "Run a Python (PyTorch) training worker as a child process and drive it as an Effect service",
  license: deno.license,
  type: "module",
  exports: { ".": { types: "./dist/mod.d.ts", default: "./dist/mod.js" } },
  main: "./dist/mod.js",
  types: "./dist/mod.d.ts",
  files: ["dist", "src", "README.md", "LICENSE"],
  sideEffects: false,
  engines: { node: ">=20" },
  dependencies: Object.fromEntries(
    ["effect", "@effect/platform", "@effect/platform-node"].map((name) => [name, versionOf(name)]),
  ),
}

if (import.meta.main) {
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out)
  cpSync(join(root, "src"), join(out, "src"), { recursive: true })
  writeFileSync(join(out, "package.json"), JSON.stringify(packageJson, null, 2) + "\n")
  for (const file of ["README.md", "LICENSE"]) cpSync(join(root, file), join(out, file))
  console.log(`npm/: ${packageJson.name}@${packageJson.version}; compiling with tsc`)
}
