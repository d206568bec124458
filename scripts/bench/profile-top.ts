/**
 * Summarises a V8 `.cpuprofile` (as `deno run --cpu-prof` writes it) by self
 * time: the functions the samples landed in, not their callers.
 *
 *     deno run --allow-read scripts/bench/profile-top.ts PROFILE.cpuprofile|DIR [--top N]
 *     deno run --allow-read scripts/bench/profile-top.ts PROFILE.cpuprofile|DIR --by-origin CALLS
 *
 * `--by-origin CALLS` sums self time by where the code comes from (Effect,
 * this package, Deno and its Node layer, GC, idle) and divides by CALLS.
 *
 * Given a folder, it reads the newest `.cpuprofile` in it.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"

interface ProfileNode {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
    readonly columnNumber: number
  }
}

interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** The newest `.cpuprofile` under `path` when it is a folder, else `path`. */
export const resolveProfile = (path: string): string => {
  if (!statSync(path).isDirectory()) return path
  const newest = readdirSync(path)
    .filter((name) => name.endsWith(".cpuprofile"))
    .map((name) => ({ name, mtime: statSync(join(path, name)).mtimeMs }))
    .sort((a, b) => b.mtime - a.mtime)[0]
  if (newest === undefined) throw new Error(`no .cpuprofile in ${path}`)
  return join(path, newest.name)
}

const shortUrl = (url: string) => {
  const nodeModules = url.lastIndexOf("/node_modules/")
  if (nodeModules >= 0) {
    return url.slice(nodeModules + "/node_modules/".length).replace(/^\.deno\/[^/]+\/node_modules\//, "")
  }
  return url.replace(/^file:\/\/.*?\/(src|scripts)\//, "$1/")
}

/** Self time in µs per key of the sampled frame, and the total; a sample's delta is charged to its own frame. */
const selfTime = (
  profile: CpuProfile,
  keyOf: (frame: ProfileNode["callFrame"] | undefined) => string,
): { readonly byKey: Map<string, number>; readonly total: number } => {
  const byNode = new Map<number, ProfileNode>(profile.nodes.map((node) => [node.id, node]))
  const byKey = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const micros = profile.timeDeltas[i] ?? 0
    total += micros
    const key = keyOf(byNode.get(id)?.callFrame)
    byKey.set(key, (byKey.get(key) ?? 0) + micros)
  })
  return { byKey, total }
}

/** A table of the `top` functions by self time, with their share of all samples. */
export const summarise = (profile: CpuProfile, top: number): string => {
  const { byKey, total } = selfTime(
    profile,
    (frame) =>
      frame === undefined
        ? "?"
        : `${frame.functionName || "(anonymous)"}  ${shortUrl(frame.url)}${
          frame.url ? `:${frame.lineNumber + 1}` : ""
        }`,
  )
  const rows = [...byKey.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
  return [
    `self time  share  function  location   (${(total / 1000).toFixed(0)} ms sampled)`,
    ...rows.map(([key, micros]) =>
      `${(micros / 1000).toFixed(1).padStart(7)} ms  ${(100 * micros / total).toFixed(1).padStart(4)}%  ${key}`
    ),
  ].join("\n")
}

/** Where a frame's code comes from: the V8 pseudo-frames, Effect, this package, Deno and its Node layer. */
const originOf = (frame: ProfileNode["callFrame"]): string => {
  const name = frame.functionName
  if (name === "(idle)" || name === "(garbage collector)" || name === "(program)") return name
  // The socket write's syscall: on a shared core it includes the time the worker runs meanwhile.
  if (name === "writeBuffer") return "writeBuffer"
  if (frame.url.includes("/node_modules/.deno/effect@")) return "effect"
  if (/\/(src)\//.test(frame.url)) return "src/ (this package)"
  if (frame.url.startsWith("ext:") || frame.url.startsWith("node:") || name.startsWith("op_")) return "deno and node:*"
  return "other"
}

/** Self time per origin (`originOf`), in µs per call when `calls` is given. */
export const byOrigin = (profile: CpuProfile, calls: number | undefined): string => {
  const { byKey } = selfTime(profile, (frame) => frame === undefined ? "other" : originOf(frame))
  const unit = calls === undefined ? "ms" : "µs per call"
  return [...byKey.entries()].sort((a, b) => b[1] - a[1]).map(([origin, micros]) =>
    `${(calls === undefined ? micros / 1000 : micros / calls).toFixed(1).padStart(9)} ${unit}  ${origin}`
  ).join("\n")
}

if (import.meta.main) {
  const args = [...Deno.args]
  const topAt = args.indexOf("--top")
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25
  const originAt = args.indexOf("--by-origin")
  const calls = originAt >= 0 ? Number(args.splice(originAt, 2)[1]) : undefined
  if (args.length !== 1 || !Number.isInteger(top) || top < 1 || (calls !== undefined && !(calls > 0))) {
    console.error(
      "usage: deno run --allow-read scripts/bench/profile-top.ts PROFILE.cpuprofile|DIR [--top N] [--by-origin CALLS]",
    )
    Deno.exit(2)
  }
  const path = resolveProfile(args[0])
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile
  console.log(`${path}\n${calls === undefined ? summarise(profile, top) : byOrigin(profile, calls)}`)
}
