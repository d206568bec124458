/**
 * The parent dying at any moment: a client process (tests/fixtures/
 * parent_death_client.ts) starts a worker whose workload starts a child, a
 * grandchild and a `setsid` grandchild, and is SIGKILLed idle, mid-call (a
 * sleep, or a busy loop holding the GIL) or during a slow start. Every
 * recorded process must be gone within a bounded wait, and no config file
 * may stay in the client's (private) temporary directory.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { awaitGone, fixturesRoot, isAlive, testPython } from "./helpers.ts"

const script = join(fixturesRoot, "..", "parent_death_client.ts")

const killedAt = (mode: "idle" | "call" | "busy" | "slow-start") =>
  Effect.gen(function* () {
    const dir = mkdtempSync(join(tmpdir(), "burn-p2p-parent-death-"))
    const tmp = join(dir, "tmp")
    const pidsFile = join(dir, "pids.json")
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    yield* Effect.sync(() => Deno.mkdirSync(tmp))
    const child = spawn(process.execPath, ["run", "-A", script, testPython, pidsFile, mode], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, TMPDIR: tmp },
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
    if (mode === "slow-start") {
      // The factory has recorded the tree and sleeps: the start is under way.
      yield* Effect.suspend(() => existsSync(pidsFile) ? Effect.void : Effect.fail("no pids yet")).pipe(
        Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 1000 }),
      )
    } else {
      yield* Effect.async<void>((resume) => {
        child.stdout!.on("data", (chunk: Uint8Array) => {
          if (String(chunk).includes("ready")) resume(Effect.void)
        })
      })
    }
    const pids = JSON.parse(readFileSync(pidsFile, "utf8")) as Record<string, number>
    expect(Object.keys(pids).sort()).toEqual(["child", "grandchild", "setsid_grandchild", "worker"])
    for (const pid of Object.values(pids)) expect(isAlive(pid)).toBe(true)
    const killed = Date.now()
    child.kill("SIGKILL")
    yield* awaitGone(Object.values(pids))
    const millis = Date.now() - killed
    console.log(`[parent death ${mode}] ${Object.keys(pids).length} processes gone ${millis} ms after the SIGKILL`)
    expect(readdirSync(tmp).filter((name) => name.startsWith("burn-p2p-worker-config-"))).toEqual([])
    expect(readdirSync(tmp)).toEqual([])
  }).pipe(Effect.scoped)

describe("the parent dying at any moment", () => {
  it.live(
    "idle: every process of the worker's tree is gone, the setsid grandchild included",
    () => killedAt("idle"),
    60_000,
  )
  it.live("mid-call (a 60 s sleep)", () => killedAt("call"), 60_000)
  it.live("mid-call (a busy loop holding the GIL)", () => killedAt("busy"), 60_000)
  it.live("during a slow start (the factory sleeps 30 s), config via a file", () => killedAt("slow-start"), 60_000)
})
