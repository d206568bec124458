/**
 * Generated fault scenarios against `tests/fixtures/python/fault_worker.py`,
 * a worker that serves the real protocol and misbehaves on cue. For every
 * plan: each call resolves with a valid result or exactly one typed error
 * within its deadline plus slack; no process or listener outlives the scope;
 * no caller gets another's answer; the worker never sees two requests in
 * flight; and an error after a death carries what the worker wrote to stderr.
 *
 * Replay a failure with FAULT_SEED=<seed printed by fast-check>; FAULT_RUNS
 * sets the number of plans per property (default 100).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import process from "node:process"
import { make } from "../src/PythonWorker.ts"
import { awaitGone, echoBatch, faultWorker, portIsClosed } from "./helpers.ts"

const CALL_TIMEOUT_MS = 400
/** Beyond the deadline: the wait for the exit status (1 s) and the stderr drain (0.3 s) after a death. */
const SLACK_MS = 1_600
const RUNS = Number(process.env.FAULT_RUNS ?? 100)
const SEED = Number(process.env.FAULT_SEED ?? 20261128)

type Fault =
  | { readonly fault: "behave" | "sigkill" | "hang" | "wrong_id" | "oversize" | "close_mid_frame" }
  | { readonly fault: "invalid_json" | "invalid_utf8" | "bad_schema" | "missing_ok" | "unsolicited" }
  | { readonly fault: "spawn_child" | "stop" | "remote_error" }
  | { readonly fault: "exit"; readonly code: number }
  | { readonly fault: "sleep"; readonly ms: number }
  | { readonly fault: "garbage"; readonly n: number }
  | { readonly fault: "stderr_flood"; readonly n: number }

const faultArb: fc.Arbitrary<Fault> = fc.oneof(
  fc.constantFrom(
    ...([
      "behave",
      "sigkill",
      "hang",
      "wrong_id",
      "oversize",
      "close_mid_frame",
      "invalid_json",
      "invalid_utf8",
    ] as const),
  ).map((fault) => ({ fault })),
  fc.constantFrom(...(["bad_schema", "missing_ok", "unsolicited", "spawn_child", "stop", "remote_error"] as const))
    .map((fault) => ({ fault })),
  fc.integer({ min: 0, max: 255 }).map((code) => ({ fault: "exit" as const, code })),
  fc.integer({ min: 0, max: 60 }).map((ms) => ({ fault: "sleep" as const, ms })),
  fc.integer({ min: 1, max: 64 }).map((n) => ({ fault: "garbage" as const, n })),
  fc.integer({ min: 1, max: 2_000_000 }).map((n) => ({ fault: "stderr_flood" as const, n })),
)

interface PlanEntry {
  readonly at: number
  readonly fault: Fault
  readonly stderr: string | undefined
}

interface Scenario {
  readonly calls: number
  readonly plan: ReadonlyArray<PlanEntry>
  readonly ignoreSigterm: boolean
  /** Per call: interrupt the caller (an outer `Effect.timeout`) after this many ms. Concurrent mode only. */
  readonly interruptAfter: ReadonlyArray<number | undefined>
}

const scenarioArb = (maxCalls: number): fc.Arbitrary<Scenario> =>
  fc.record({
    calls: fc.integer({ min: 1, max: maxCalls }),
    entries: fc.uniqueArray(
      fc.record({ at: fc.integer({ min: 1, max: maxCalls + 1 }), fault: faultArb, withStderr: fc.boolean() }),
      { maxLength: 3, selector: (entry) => entry.at },
    ),
    ignoreSigterm: fc.boolean(),
    interruptAfter: fc.array(fc.option(fc.integer({ min: 0, max: 80 }), { nil: undefined, freq: 3 }), {
      minLength: maxCalls,
      maxLength: maxCalls,
    }),
  }).map(({ calls, entries, ignoreSigterm, interruptAfter }) => ({
    calls,
    ignoreSigterm,
    interruptAfter,
    plan: entries.map(({ at, fault, withStderr }) => ({
      at,
      fault,
      stderr: withStderr ? `fault-marker at request ${at} (${fault.fault})` : undefined,
    })),
  }))

/** What a call meeting this fault resolves to, and what state the service is in afterwards. */
const expectedOutcome = (fault: Fault | undefined): { tag: string; after: "open" | "exited" | "closed" } => {
  switch (fault?.fault) {
    case undefined:
    case "behave":
    case "sleep":
    case "stderr_flood":
    case "spawn_child":
      return { tag: "Success", after: "open" }
    case "remote_error":
      return { tag: "RemoteError", after: "open" }
    case "exit":
    case "sigkill":
      return { tag: "WorkerExitedError", after: "exited" }
    case "hang":
    case "stop":
      return { tag: "RpcTimeoutError", after: "closed" }
    case "garbage":
      // Fewer than 8 bytes never complete a header: nothing to refuse until the deadline.
      return fault.n < 8 ? { tag: "RpcTimeoutError", after: "closed" } : { tag: "ProtocolError", after: "closed" }
    default:
      return { tag: "ProtocolError", after: "closed" }
  }
}

interface Outcome {
  readonly tag: string
  readonly millis: number
  readonly error?: { readonly _tag: string; readonly stderrTail?: string; readonly message: string }
}

/** Success, or exactly one typed failure: no defect, no interruption, nothing else in the cause. */
const classify = <A>(
  exit: Exit.Exit<A, { readonly _tag: string; readonly message: string }>,
  check: (a: A) => void,
) => {
  if (Exit.isSuccess(exit)) {
    check(exit.value)
    return { tag: "Success" }
  }
  const failures = [...Cause.failures(exit.cause)]
  expect(Cause.isDie(exit.cause), `defect: ${Cause.pretty(exit.cause)}`).toBe(false)
  expect(failures.length, Cause.pretty(exit.cause)).toBe(1)
  return { tag: failures[0]._tag, error: failures[0] }
}

/**
 * Runs one scenario: start the fault worker (its `hello` is request 1), make
 * the calls, close the scope; then check what must hold whatever happened.
 */
const runScenario = (scenario: Scenario, mode: "sequential" | "concurrent") => {
  const worker = faultWorker(
    scenario.plan.map(({ at, fault, stderr }) => ({ at, ...fault, ...(stderr ? { stderr } : {}) })),
    { ignoreSigterm: scenario.ignoreSigterm, callTimeout: CALL_TIMEOUT_MS, terminateGrace: 200 },
  )
  return Effect.gen(function* () {
    const outcomes: Array<Outcome> = []
    const started = Date.now()
    const session = yield* Effect.scoped(Effect.gen(function* () {
      const service = yield* make(worker.options)
      const one = (i: number) =>
        Effect.suspend(() => {
          const begin = Date.now()
          const interruptAfter = mode === "concurrent" ? scenario.interruptAfter[i] : undefined
          const call = service.trainWindow("m1", [echoBatch({ echo: `call-${i}` })])
          return (interruptAfter === undefined ? call : Effect.timeout(call, interruptAfter)).pipe(
            Effect.exit,
            Effect.map((exit) => {
              const outcome = classify(exit, (metrics) => expect(metrics.echo).toBe(`call-${i}`))
              const millis = Date.now() - begin
              // An interrupted caller returns promptly, whatever the wire is doing.
              if (outcome.tag === "TimeoutException") expect(millis).toBeLessThan(interruptAfter! + 250)
              outcomes[i] = { ...outcome, millis }
            }),
          )
        })
      yield* Effect.forEach(Array.from({ length: scenario.calls }, (_, i) => i), one, {
        concurrency: mode === "sequential" ? 1 : "unbounded",
        discard: true,
      })
    })).pipe(
      Effect.provide(NodeContext.layer),
      Effect.exit,
      // A hang is a failed property with its seed printed, not a stuck suite.
      Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("scenario hung for 30 s") }),
      Effect.orDie,
    )
    const closedAfter = Date.now() - started

    return { session, outcomes, events: worker.events(), closedAfter }
  }).pipe(Effect.ensuring(worker.cleanup))
}

const checkCommon = (result: Effect.Effect.Success<ReturnType<typeof runScenario>>) =>
  Effect.gen(function* () {
    const { events, outcomes, session } = result
    // 1. Each call settled within its deadline plus slack, as a success or one typed failure.
    if (Exit.isFailure(session)) classify(session, () => undefined)
    for (const outcome of outcomes) expect(outcome.millis).toBeLessThanOrEqual(CALL_TIMEOUT_MS + SLACK_MS)
    // 2. Nothing the test started outlives the scope: the worker, its children, the listener.
    const pids = events.filter((e) => e.event === "start" || e.event === "child").map((e) => e.pid as number)
    yield* awaitGone(pids)
    const start = events.find((e) => e.event === "start")
    if (start !== undefined) expect(yield* portIsClosed(start.port as number)).toBe(true)
    // 4. The worker never had two requests in flight.
    expect(events.filter((e) => e.event === "overlap")).toEqual([])
  })

const propertyOptions = { timeout: 600_000, fastCheck: { numRuns: RUNS, seed: SEED, endOnFailure: true } }

describe("fault scenarios", () => {
  it.live.prop(
    "sequential calls: every call meets exactly the outcome its fault implies, and a death quotes stderr",
    [scenarioArb(5)],
    ([scenario]) =>
      Effect.gen(function* () {
        const result = yield* runScenario(scenario, "sequential")
        yield* checkCommon(result)
        const faultAt = new Map(scenario.plan.map((entry) => [entry.at, entry]))
        let state: "open" | "exited" | "closed" = "open"
        const expectAt = (request: number, actual: { tag: string; error?: Outcome["error"] } | undefined) => {
          const entry = faultAt.get(request)
          const expected = state === "exited"
            ? { tag: "WorkerExitedError", after: state }
            : state === "closed"
            ? { tag: "WorkerClosedError", after: state }
            : expectedOutcome(entry?.fault)
          expect(actual?.tag, `request ${request}: ${actual?.error?.message ?? "ok"}`).toBe(expected.tag)
          // 5. A death right after writing to stderr is explained by that text.
          if (state === "open" && expected.after === "exited" && entry?.stderr !== undefined) {
            expect(actual?.error?.stderrTail).toContain(entry.stderr)
            expect(actual?.error?.message).toContain(entry.stderr)
          }
          state = expected.after
        }
        if (Exit.isFailure(result.session)) {
          // Acquisition failed: only `hello` (request 1) can have caused it.
          expectAt(1, classify(result.session, () => undefined))
          expect(result.outcomes).toEqual([])
          return
        }
        expectAt(1, { tag: "Success" })
        for (let i = 0; i < scenario.calls; i++) expectAt(i + 2, result.outcomes[i])
      }),
    propertyOptions,
  )

  it.live.prop(
    "concurrent and interrupted callers: each gets its own answer or one typed error, never another's",
    [scenarioArb(8)],
    ([scenario]) =>
      Effect.gen(function* () {
        const result = yield* runScenario(scenario, "concurrent")
        yield* checkCommon(result)
        // 3. `classify` checked every success echoed its own payload; every call settled.
        if (Exit.isSuccess(result.session)) expect(result.outcomes.filter(Boolean).length).toBe(scenario.calls)
      }),
    propertyOptions,
  )
})
