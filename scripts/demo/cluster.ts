/**
 * The demo's workers: the peers as one `PythonWorkerPool`, the reducer as a
 * `PythonWorker` of its own, and what a user writes around a supervised
 * worker that may die:
 *
 * - every worker's `events` is followed and shown (started, died,
 *   restarting, gave up), and the restarts are counted;
 * - each peer's `onStart` (run against every fresh worker before it serves
 *   a call) reloads the current canonical model from `canonical`, a Ref the
 *   round loop keeps up to date, re-applies the current learning-rate patch,
 *   and stores the peer's new model id where the round loop reads it;
 * - `recovering` runs a peer's task against its current model and, if the
 *   worker died under it (`WorkerExitedError`, `ModelLostError`, or a
 *   `ProtocolError` from a cut-off answer, after which the manager kills the
 *   worker), waits for the restarted worker and runs the task once more;
 * - `--chaos` SIGKILLs one peer's worker at a seeded random point.
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import process from "node:process"
import * as PythonWorker from "../../src/PythonWorker.ts"
import * as PythonWorkerPool from "../../src/PythonWorkerPool.ts"
import {
  type CallError,
  ModelLostError,
  ProtocolError,
  type StartError,
  WorkerExitedError,
} from "../../src/WorkerError.ts"
import { DemoEvent, type Progress } from "./progress.ts"
import { workloadConfig, type WorkloadSpec } from "./workloads.ts"

/** What a fresh peer worker reloads: the canonical model as an artifact (merge) or as a pack (DiLoCo). */
export type CanonicalSource =
  | { readonly kind: "artifact"; readonly path: string }
  | { readonly kind: "pack"; readonly path: string }

export interface Peer {
  readonly name: string
  readonly index: number
  readonly worker: PythonWorker.PythonWorker.Service
  /** The peer's current model id; `onStart` replaces it after a restart. */
  readonly model: Ref.Ref<string>
}

export interface Restart {
  readonly actor: string
  /** The worker process that died, and how. */
  readonly generation: number
  readonly pid: number
  readonly signal: string | null
  readonly exitCode: number | null
  readonly delayMillis: number
}

export interface ChaosPlan {
  /** Which series (in `--mode compare`), round (1-based) and peer; the kill comes `fraction` of the way into the peer's expected task time. */
  readonly series: number
  readonly round: number
  readonly peer: number
  readonly fraction: number
}

export interface Cluster {
  readonly reducer: PythonWorker.PythonWorker.Service
  readonly peers: ReadonlyArray<Peer>
  readonly canonical: Ref.Ref<Option.Option<CanonicalSource>>
  /** The learning rate the peers were last patched to; none: the workload config's. */
  readonly learningRate: Ref.Ref<Option.Option<number>>
  /** Every worker pid seen, restarts included. */
  readonly pids: () => ReadonlyArray<number>
  readonly restarts: () => ReadonlyArray<Restart>
  readonly startupMillis: number
  readonly workloadName: string
}

export interface ClusterSettings {
  readonly python: string
  readonly workload: WorkloadSpec
  readonly peers: number
  readonly callTimeout: Duration.DurationInput
}

const patchOf = (learningRate: number, id: string) => ({
  patchId: id,
  class: "Hot" as const,
  summary: `set the learning rate to ${learningRate}`,
  values: { learning_rate: learningRate },
  requiredClientCapabilities: [],
})

export { patchOf }

/** The generation a model id names (`w0.g2:m1` -> 2), 0 when it names none. */
const generationOf = (modelId: string) => Number(/g(\d+):/.exec(modelId)?.[1] ?? 0)

/** Stores a model id unless a newer worker's (set by `onStart` meanwhile) is there already. */
export const setModel = (peer: Pick<Peer, "model">, modelId: string): Effect.Effect<void> =>
  Ref.update(peer.model, (current) => generationOf(current) > generationOf(modelId) ? current : modelId)

const describeDeath = (signal: string | null, exitCode: number | null) =>
  signal !== null ? `killed by ${signal}` : exitCode !== null ? `exited with code ${exitCode}` : "died"

export const startCluster = (
  settings: ClusterSettings,
  progress: Progress,
): Effect.Effect<
  Cluster,
  StartError | CallError,
  Scope.Scope | CommandExecutor.CommandExecutor | FileSystem.FileSystem
> =>
  Effect.gen(function* () {
    const { workload } = settings
    const peerNames = Array.from({ length: settings.peers }, (_, index) => `peer-${index}`)
    const say = (actor: string, text: string) => progress.emit(DemoEvent.Phase({ actor, text }))
    const log = (text: string) => progress.emit(DemoEvent.Log({ text }))
    const canonical = yield* Ref.make<Option.Option<CanonicalSource>>(Option.none())
    const learningRate = yield* Ref.make<Option.Option<number>>(Option.none())
    const models = yield* Effect.forEach(peerNames, () => Ref.make(""))
    const pids = new Set<number>()
    const restarts: Array<Restart> = []

    const options = (onStart?: (worker: PythonWorker.PythonWorker.Service) => Effect.Effect<unknown, CallError>) => ({
      workloadFactory: workload.factory,
      workloadConfig: workloadConfig(workload),
      pythonExecutable: settings.python,
      connectTimeout: workload.connectTimeout,
      callTimeout: settings.callTimeout,
      onStart,
    })

    /** Run against every fresh peer worker; on the first start there is no canonical model yet. */
    const onStart = (index: number) => (worker: PythonWorker.PythonWorker.Service) =>
      Effect.gen(function* () {
        const source = yield* Ref.get(canonical)
        if (Option.isNone(source)) return
        const name = peerNames[index]
        yield* say(name, `worker #${worker.generation}: reloading the canonical model`)
        const rate = yield* Ref.get(learningRate)
        if (Option.isSome(rate)) {
          yield* worker.applyPatch(patchOf(rate.value, `restart-${worker.generation}-learning-rate`))
        }
        const modelId = source.value.kind === "artifact"
          ? yield* Effect.tap(
            worker.initModel(workload.device),
            (id) => worker.loadModelArtifact(id, source.value.path),
          )
          : yield* worker.importParameterPack(workload.device, source.value.path)
        yield* setModel({ model: models[index] }, modelId)
        yield* log(
          `${name}: worker #${worker.generation} (pid ${worker.pid}) reloaded ${source.value.path}${
            Option.isSome(rate) ? ` and learning rate ${rate.value}` : ""
          }`,
        )
      })

    const follow = (actor: string, worker: PythonWorker.PythonWorker.Service) =>
      Effect.forkScoped(Stream.runForEach(worker.events, (event) =>
        Effect.suspend(() => {
          switch (event._tag) {
            case "Started":
              pids.add(event.pid)
              return event.generation === 1
                ? log(`${actor} ready: pid ${event.pid}, ${worker.info.workloadName}`)
                : log(`${actor} ready: pid ${event.pid}, worker #${event.generation} (restarted)`)
            case "Exited":
              return log(
                `${actor}: worker #${event.generation} (pid ${event.pid}) ${
                  describeDeath(event.signal, event.exitCode)
                }`,
              )
            case "Restarting":
              restarts.push({
                actor,
                generation: event.after.generation,
                pid: event.after.pid,
                signal: event.after.signal,
                exitCode: event.after.exitCode,
                delayMillis: event.delayMillis,
              })
              return log(`${actor}: restarting: worker #${event.generation} in ${event.delayMillis} ms`)
            case "GaveUp":
              return log(`${actor}: gave up after ${event.starts} starts`)
          }
        })))

    const started = yield* Clock.currentTimeMillis
    yield* Effect.forEach(["reducer", ...peerNames], (actor) => say(actor, "starting worker"))
    // Each side owns a sequential scope ("stopping" before its workers' own
    // stop sequence, "stopped" after it); the two start, and stop, at once.
    const [reducer, pool] = yield* Effect.all([
      Effect.gen(function* () {
        yield* Effect.addFinalizer(() => say("reducer", "stopped"))
        const worker = yield* PythonWorker.make(options())
        yield* Effect.addFinalizer(() => say("reducer", "stopping"))
        return worker
      }).pipe(Effect.sequentialFinalizers),
      Effect.gen(function* () {
        yield* Effect.addFinalizer(() => Effect.forEach(peerNames, (name) => say(name, "stopped")))
        const pool = yield* PythonWorkerPool.make({ size: settings.peers, options: (index) => options(onStart(index)) })
        yield* Effect.addFinalizer(() => Effect.forEach(peerNames, (name) => say(name, "stopping")))
        return pool
      }).pipe(Effect.sequentialFinalizers),
    ], { concurrency: "unbounded" }).pipe(Effect.parallelFinalizers)
    const startupMillis = (yield* Clock.currentTimeMillis) - started

    yield* follow("reducer", reducer)
    const peers = pool.workers.map((worker, index): Peer => ({
      name: peerNames[index],
      index,
      worker,
      model: models[index],
    }))
    yield* Effect.forEach(peers, (peer) => follow(peer.name, peer.worker))
    yield* Effect.forEach(["reducer", ...peerNames], (actor) => progress.emit(DemoEvent.Idle({ actor })))

    return {
      reducer,
      peers,
      canonical,
      learningRate,
      pids: () => [...pids],
      restarts: () => [...restarts],
      startupMillis,
      workloadName: reducer.info.workloadName,
    } satisfies Cluster
  })

/** A call failed because its worker died (or was killed for a broken answer). */
type WorkerLoss = WorkerExitedError | ModelLostError | ProtocolError

const isWorkerLoss = (error: unknown): error is WorkerLoss =>
  error instanceof WorkerExitedError || error instanceof ModelLostError || error instanceof ProtocolError

/**
 * Waits until a worker newer than the one that failed is serving (its
 * `onStart` done), from the worker's event stream (which replays recent
 * events, so a restart already over is seen at once). Fails with `error`
 * if the worker gave up instead.
 */
const awaitReplacement = (worker: PythonWorker.PythonWorker.Service, error: WorkerLoss) => {
  const pid = error instanceof ModelLostError ? null : error.pid
  return worker.events.pipe(
    Stream.mapAccum(
      // The dead worker: the model's, else the one with the failed call's pid (else the last one serving).
      error instanceof ModelLostError ? error.generation : pid === null ? worker.generation : undefined,
      (dead: number | undefined, event): [number | undefined, Option.Option<PythonWorker.WorkerEvent>] => {
        const known = dead ??
          ((event._tag === "Started" || event._tag === "Exited") && event.pid === pid ? event.generation : undefined)
        const done = known !== undefined &&
          ((event._tag === "Started" && event.generation > known) || event._tag === "GaveUp")
        return [known, done ? Option.some(event) : Option.none()]
      },
    ),
    Stream.filterMap((event) => event),
    Stream.runHead,
    Effect.flatMap((event) =>
      Option.isSome(event) && event.value._tag === "Started" ? Effect.void : Effect.fail(error)
    ),
  )
}

/**
 * Runs `task` with the peer's current model; if the worker died under it,
 * once more with the model the restarted worker's `onStart` made.
 */
export const recovering = <A, E, R>(
  peer: Peer,
  what: string,
  progress: Progress,
  task: (modelId: string) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E, R> => {
  const log = (text: string) => progress.emit(DemoEvent.Log({ text }))
  const attempt = Effect.flatMap(Ref.get(peer.model), task)
  return attempt.pipe(
    Effect.catchAll((error) =>
      isWorkerLoss(error)
        ? Effect.gen(function* () {
          yield* log(`${peer.name}: ${what} failed: ${error._tag}; waiting for the restarted worker`)
          yield* Effect.orElseFail(awaitReplacement(peer.worker, error), () => error as E)
          yield* log(`${peer.name}: retrying ${what} on worker #${peer.worker.generation} (pid ${peer.worker.pid})`)
          return yield* attempt
        })
        : Effect.fail(error)
    ),
  )
}

/** The seeded choice of where `--chaos` strikes. */
export const planChaos = (
  seed: number,
  shape: { readonly series: number; readonly rounds: number; readonly peers: number },
): Effect.Effect<ChaosPlan> => {
  const random = Random.make(seed)
  return Effect.all({
    series: random.nextIntBetween(0, shape.series),
    // Not the last round (unless it is the only one): the run goes on after the recovery.
    round: random.nextIntBetween(1, Math.max(2, shape.rounds)),
    peer: random.nextIntBetween(0, shape.peers),
    fraction: Effect.map(random.next, (value) => 0.1 + 0.8 * value),
  })
}

/**
 * Arms the kill: `strike(peer, expectedMillis)` forks, in `scope`, a fiber
 * that SIGKILLs the peer's worker after `fraction * expectedMillis`; `done`
 * completes once the killed worker's replacement serves.
 */
export const makeChaos = (plan: ChaosPlan, progress: Progress, scope: Scope.Scope) =>
  Effect.gen(function* () {
    const done = yield* Deferred.make<void>()
    let armed = true
    const log = (text: string) => progress.emit(DemoEvent.Log({ text }))
    const strike = (peer: Peer, expectedMillis: number) =>
      Effect.suspend(() => {
        if (!armed) return Effect.void
        armed = false
        const delay = Math.round(plan.fraction * Math.max(20, expectedMillis))
        return Effect.forkIn(
          Effect.gen(function* () {
            yield* Effect.sleep(Duration.millis(delay))
            const pid = peer.worker.pid
            const generation = peer.worker.generation
            yield* log(`chaos: SIGKILL to ${peer.name}'s worker #${generation} (pid ${pid}), ${delay} ms into its task`)
            process.kill(pid, "SIGKILL")
            // Until the replacement is up (replayed events: never missed).
            yield* peer.worker.events.pipe(
              Stream.filter((event) =>
                (event._tag === "Started" && event.generation > generation) || event._tag === "GaveUp"
              ),
              Stream.runHead,
            )
            yield* Deferred.succeed(done, undefined)
          }),
          scope,
        )
      })
    return { plan, strike, done: Deferred.await(done) }
  })

export type Chaos = Effect.Effect.Success<ReturnType<typeof makeChaos>>
