/**
 * The per-method service, derived from `Rpcs`: each entry becomes a method
 * of the same name that maps its positional arguments through the entry,
 * runs in a span (made by the call: see `observe.ts`), and maps the result back.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { Rpcs } from "../Protocol.ts"
import type { CallOptions, PythonWorker, WorkerEvent } from "../PythonWorker.ts"
import type { CallError } from "../WorkerError.ts"
import type { Calls } from "./calls.ts"
import { type SpanSpec, spanSpec } from "./observe.ts"
import type { AnyRpc } from "./rpcTypes.ts"

type Methods = PythonWorker.Methods

/** `call`'s span per `Rpc`, made once. */
const callSpans = new WeakMap<object, SpanSpec>()
const callSpan = (rpc: { readonly method: string }): SpanSpec => {
  let found = callSpans.get(rpc)
  if (found === undefined) {
    found = spanSpec("PythonWorker.call", rpc.method)
    callSpans.set(rpc, found)
  }
  return found
}

/** How long a scoped model's release may wait for the wire. */
const RELEASE_GRACE = Duration.seconds(5)

const method = (calls: Calls, name: string, rpc: AnyRpc) => {
  // Made once: the span copies what it needs.
  const span = spanSpec(`PythonWorker.${name}`, rpc.method)
  return (...args: ReadonlyArray<unknown>) => {
    const callOptions = args.length > rpc.arity ? args[rpc.arity] as CallOptions | undefined : undefined
    const positional = args.length > rpc.arity ? args.slice(0, rpc.arity) : args
    return calls.invoke(rpc, positional, callOptions, span)
  }
}

/**
 * The service over a worker's calls.
 *
 * @internal
 */
export const make = (
  calls: Calls,
  events: Stream.Stream<WorkerEvent>,
): PythonWorker.Service => {
  const methods: Record<string, unknown> = {}
  for (const [name, rpc] of Object.entries(Rpcs)) {
    if (name !== "shutdown") methods[name] = method(calls, name, rpc)
  }
  const typed = methods as unknown as Methods
  const model = (device: string, options?: CallOptions): Effect.Effect<string, CallError, Scope.Scope> =>
    Effect.acquireRelease(
      typed.initModel(device, options),
      // Whatever happened, and never an error: a worker that is gone has freed it already.
      // Bounded: a release queued behind a hung call, or waiting for a restart, must not hold the scope.
      (modelId) => typed.releaseModel(modelId).pipe(Effect.interruptible, Effect.timeout(RELEASE_GRACE), Effect.ignore),
    )
  return {
    ...typed,
    get pid() {
      return calls.pid()
    },
    get generation() {
      return calls.generation()
    },
    get info() {
      return calls.info()
    },
    events,
    call: (rpc, params, options) => calls.raw(rpc, params, options, callSpan(rpc)),
    model,
  }
}
