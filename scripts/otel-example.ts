/**
 * `deno task example:otel`: the library's spans and metrics exported with
 * `@effect/opentelemetry` to the console.
 *
 * A worker on the standard-library workload makes a model, trains it,
 * evaluates it, and answers one call that fails in Python (a custom split,
 * which the workload refuses with a `ValueError`: a `RemoteError`). Every
 * call is a `PythonWorker.<method>` span, printed by `ConsoleSpanExporter`
 * as it ends; the `burn_p2p_worker_*` metrics are printed by
 * `ConsoleMetricExporter` through a `PeriodicExportingMetricReader`, which
 * the SDK layer flushes when it is released, after the worker has stopped.
 * To send the same to a collector instead, see the README ("Observability").
 *
 *     deno task example:otel [--python PATH]
 *
 * Permissions: those of the library (README, "Permissions"); the runtime
 * cache at its default place, config files under `/tmp`.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { ConsoleMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { ConsoleSpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import { type BatchRef, PythonWorker } from "../src/mod.ts"

const argv = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args
const pythonFlag = argv.indexOf("--python")
const python = pythonFlag >= 0 && argv[pythonFlag + 1] !== undefined ? argv[pythonFlag + 1] : "/usr/bin/python3"

const batch = (ordinal: number): BatchRef => ({
  kind: "micro_epoch",
  leaseId: `lease-${ordinal}`,
  microshardIds: [`ms-${ordinal}`],
  ordinals: [ordinal],
  bytesLen: 0,
  pipelineKind: "generated-dataset",
  payload: { seed: 7 },
})

const program = Effect.gen(function* () {
  const worker = yield* PythonWorker
  // The test reads this line to check that the worker is gone once the program has ended.
  console.log(`worker pid ${worker.pid}`)
  yield* worker.hello()
  const model = yield* worker.initModel("cpu")
  yield* worker.trainWindow(model, [batch(0), batch(1)])
  yield* worker.trainWindow(model, [batch(2)])
  const metrics = yield* worker.evaluate(model, "Validation")
  console.log(`evaluate: ${JSON.stringify(metrics)}`)
  // Fails in Python: the span gets rpc.outcome "RemoteError", burn_p2p_worker_call_errors counts it.
  const refused = yield* Effect.flip(worker.evaluate(model, { Custom: "holdout" }))
  console.log(`evaluate({ Custom: "holdout" }) failed as expected: ${refused._tag}: ${refused.message}`)
  yield* worker.releaseModel(model)
}).pipe(
  // A parent span: every call's span joins one trace, as a request of an application would.
  Effect.withSpan("otel-example"),
)

const WorkerLive = PythonWorker.layer({
  workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
  workloadConfig: { learning_rate: 0.1 },
  pythonExecutable: python,
})

/**
 * Spans go out one by one as they end; metrics every 10 s and once more at
 * shutdown (the reader's `shutdown` collects and exports a last time), so
 * this short program prints each metric once.
 */
const TelemetryLive = NodeSdk.layer(() => ({
  resource: { serviceName: "burn-p2p-otel-example", serviceVersion: "0.1.0" },
  spanProcessor: new SimpleSpanProcessor(new ConsoleSpanExporter()),
  metricReader: new PeriodicExportingMetricReader({
    exporter: new ConsoleMetricExporter(),
    exportIntervalMillis: 10_000,
  }),
}))

// The SDK layer is outermost: built first, released last, after the worker's own release.
program.pipe(
  Effect.provide(WorkerLive),
  Effect.provide(TelemetryLive),
  NodeRuntime.runMain,
)
