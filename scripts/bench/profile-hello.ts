/**
 * The profiled program of `deno task bench --profile DIR`: one worker pinned
 * to cpu0 beside this process, `--warmup` untimed calls, then `--calls` `hello()` calls, each
 * a fresh Effect (spans on; no tracer installed), as an application writes them.
 *
 *     taskset -c 0 deno run --cpu-prof --cpu-prof-dir=DIR <bench permissions> scripts/bench/profile-hello.ts \
 *       [--python PATH] [--calls N] [--warmup N]
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { parseArgs } from "node:util"
import { PythonWorker } from "../../src/mod.ts"
import { pin } from "./pin.ts"

const { values } = parseArgs({
  args: Deno.args,
  options: {
    python: { type: "string", default: "/usr/bin/python3" },
    calls: { type: "string", default: "20000" },
    warmup: { type: "string", default: "50000" },
  },
})
const calls = Number(values.calls)

const program = Effect.scoped(Effect.gen(function* () {
  const context = yield* Layer.build(PythonWorker.layer({
    workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
    pythonExecutable: values.python,
  }))
  const worker = Context.get(context, PythonWorker)
  pin(worker.pid, 0)
  for (let i = 0; i < Number(values.warmup); i++) yield* worker.hello()
  const started = performance.now()
  for (let i = 0; i < calls; i++) yield* worker.hello()
  const elapsed = performance.now() - started
  console.log(`${calls} hello() calls: ${elapsed.toFixed(0)} ms, ${(elapsed / calls * 1000).toFixed(1)} µs per call`)
}))

NodeRuntime.runMain(program)
