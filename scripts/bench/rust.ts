/**
 * The seed Rust client as a baseline: `scripts/rust-compat` built once with
 * cargo (offline, against Debian's librust-*-dev sources, cached under
 * `scripts/rust-compat/target/`), then `rust-compat bench ...` prints one JSON
 * object (`scripts/rust-compat/src/bench.rs`).
 */
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as External from "./external.ts"

const DIR = fileURLToPath(new URL("../rust-compat", import.meta.url))
const REGISTRY = "/usr/share/cargo/registry"
const CRATES = ["anyhow", "serde", "serde_derive", "serde_json"]

/** What `rust-compat bench` prints. */
export interface RustFigures {
  readonly worker_pid: number
  readonly worker_affinity: string
  readonly client_affinity: string
  readonly hello: { readonly n: number; readonly median_us: number; readonly p99_us: number }
  readonly spawn_to_hello: { readonly n: number; readonly median_ms: number; readonly python: string }
  readonly train_window: {
    readonly mib: number
    readonly frame_bytes: number
    readonly runs: number
    readonly median_ms: number
    readonly mb_per_s: number
  }
}

const firstLine = (text: string) => text.trim().split("\n").slice(-1)[0] ?? ""

/** Builds the binary if needed; its path, or why it cannot be had. */
export const rustBinary = (): { readonly ok: true; readonly binary: string } | {
  readonly ok: false
  readonly reason: string
} => {
  const home = Deno.env.get("HOME")
  const cargo = [
    "cargo",
    ...(home === undefined ? [] : [join(home, ".cargo/bin/cargo")]),
  ].find((candidate) => spawnSync(candidate, ["--version"]).status === 0)
  if (cargo === undefined) return { ok: false, reason: "cargo not found (PATH, ~/.cargo/bin)" }
  const present = existsSync(REGISTRY) ? readdirSync(REGISTRY) : []
  const missing = CRATES.filter((crate) => !present.some((name) => name.startsWith(`${crate}-`)))
  if (missing.length > 0) {
    return {
      ok: false,
      reason: `Debian crate sources missing in ${REGISTRY} (${missing.join(", ")}): ` +
        "run bash scripts/rust-compat/run.sh once as root to install them",
    }
  }
  // cwd: cargo reads the offline source replacement from scripts/rust-compat/.cargo/config.toml.
  const build = spawnSync(cargo, ["build", "--release", "--offline", "--quiet"], { cwd: DIR, encoding: "utf8" })
  if (build.status !== 0) return { ok: false, reason: `cargo build failed: ${firstLine(build.stderr)}` }
  return { ok: true, binary: join(DIR, "target/release/rust-compat") }
}

export interface RustBenchOptions {
  readonly python: string
  readonly spawnPython: string
  readonly calls: number
  readonly spawnRuns: number
  readonly trainRuns: number
  readonly trainMib: number
  readonly workerCpu: number
  readonly label: string
}

/** One `rust-compat bench` run: its figures, or why it failed (the bench goes on without them). */
export const rustBench = (binary: string, options: RustBenchOptions): Effect.Effect<RustFigures | string> =>
  External.json<RustFigures>(binary, [
    "bench",
    "--python",
    options.python,
    "--spawn-python",
    options.spawnPython,
    "--calls",
    String(options.calls),
    "--spawn-runs",
    String(options.spawnRuns),
    "--train-runs",
    String(options.trainRuns),
    "--train-mib",
    String(options.trainMib),
    "--worker-cpu",
    String(options.workerCpu),
  ]).pipe(Effect.map((figures) => typeof figures === "string" ? `rust bench (${options.label}): ${figures}` : figures))
