/**
 * The demo's round logic: N peers (a `PythonWorkerPool`) and one reducer,
 * each its own Python worker process, for R rounds, in one or more series
 * (one per mode and aggregation policy, all from the same genesis model on
 * the same data leases, so they compare at equal inner compute).
 *
 * Round 0 is the genesis: the reducer initialises the canonical model,
 * publishes it and evaluates it on Test; every peer loads it. Then, each round:
 *
 * - **merge**: every peer trains one window on its own lease of microshards
 *   (no ordinal is leased twice, across peers and rounds), evaluates on
 *   Validation and publishes its model as a candidate artifact; the reducer
 *   loads the candidates, merges them (`WeightedMean`, weight = examples x
 *   validation accuracy), pulls the result toward the previous canonical
 *   model (root EMA), publishes and evaluates it; every peer loads the new
 *   canonical model and reconciles its own model with it (`RootEma`).
 * - **diloco**: every peer starts from the global parameter pack θ, runs H
 *   inner steps on the same lease (`runInnerLoop`, which writes its model as
 *   a pack; its optimiser state carries over to the peer's next round) and
 *   evaluates on Validation; the owner (this process) aggregates the
 *   pseudo-gradients θ − θᵢ under the series' policy, takes the outer SGD
 *   step and writes the next global pack, which the reducer evaluates on
 *   Test and every peer imports.
 *
 * At the start of round `patchRound` every peer gets a runtime patch that
 * lowers its learning rate (reset between series). `--byzantine` makes the
 * last peer send a forged update (its pseudo-gradient x −`byzantineScale`)
 * while it reports honest metrics. `--chaos` SIGKILLs one peer's worker at a
 * seeded random point (see cluster.ts for the recovery).
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import type { PlatformError } from "@effect/platform/Error"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { join } from "node:path"
import * as DiLoCo from "../../src/DiLoCo.ts"
import type * as ParameterPack from "../../src/ParameterPack.ts"
import type { BatchRef, MergeCandidate, Metrics, PatchOutcome } from "../../src/Protocol.ts"
import type { CallError, StartError } from "../../src/WorkerError.ts"
import {
  type CanonicalSource,
  type Chaos,
  type ChaosPlan,
  type Cluster,
  makeChaos,
  patchOf,
  type Peer,
  planChaos,
  recovering,
  type Restart,
  setModel,
  startCluster,
} from "./cluster.ts"
import { type Aggregation, forgeUpdate, outerRound, type OuterSettings, policyName } from "./outer.ts"
import { DemoEvent, type Progress } from "./progress.ts"
import type { WorkloadSpec } from "./workloads.ts"

export type SeriesSpec =
  | { readonly mode: "merge" }
  | { readonly mode: "diloco"; readonly aggregation: Aggregation }

export const seriesName = (spec: SeriesSpec): string => spec.mode === "merge" ? "merge" : `diloco-${spec.aggregation}`

export const seriesTitle = (spec: SeriesSpec): string =>
  spec.mode === "merge" ? "merge (WeightedMean + root EMA)" : `DiLoCo (${policyName(spec.aggregation)})`

export interface RoundSettings {
  readonly python: string
  readonly workload: WorkloadSpec
  readonly peers: number
  readonly rounds: number
  /** Absolute; candidate artifacts, packs and canonical models are written here (one folder per series when several). */
  readonly artifactsDir: string
  /** Weight of the incoming canonical model when a peer reconciles (`RootEma`). */
  readonly canonicalWeight: number
  /** The round at whose start the learning rate is lowered, to `patchLearningRate`. */
  readonly patchRound: number
  readonly patchLearningRate: number
  readonly callTimeout: Duration.DurationInput
  /** Run in order, on the same workers. */
  readonly series: ReadonlyArray<SeriesSpec>
  /** DiLoCo's H: inner steps per round (default: the steps of a merge-mode training window). */
  readonly innerSteps: number
  readonly outer: OuterSettings
  /** The last peer forges its update. */
  readonly byzantine: boolean
  readonly byzantineScale: number
  /** `--chaos`: the seed of the kill's place; none: no kill. */
  readonly chaos: Option.Option<number>
}

/** Lowers the learning rate halfway through: round 3 of 5, round 2 of 2. */
export const defaultSettings = (
  settings:
    & Pick<RoundSettings, "python" | "workload" | "peers" | "rounds" | "artifactsDir">
    & Partial<RoundSettings>,
): RoundSettings => ({
  canonicalWeight: 0.75,
  patchRound: Math.min(settings.rounds, Math.floor(settings.rounds / 2) + 1),
  patchLearningRate: settings.workload.learningRate / 2,
  callTimeout: Duration.minutes(2),
  series: [{ mode: "merge" }],
  innerSteps: settings.workload.stepsPerWindow,
  outer: settings.workload.outer,
  byzantine: false,
  byzantineScale: 10,
  chaos: Option.none(),
  ...settings,
})

export interface PeerRound {
  readonly peer: string
  readonly ordinals: ReadonlyArray<number>
  readonly examples: number
  /** Optimiser steps this round (a window's minibatches, or the inner loop's H). */
  readonly steps: number
  readonly learningRate: number
  readonly trainLoss: number
  readonly trainAccuracy: number
  readonly validationLoss: number
  readonly validationAccuracy: number
  /** The candidate artifact (merge) or the exported pack (DiLoCo) the peer sent. */
  readonly artifact: string
  /** This peer forged what it sent. */
  readonly byzantine: boolean
}

export interface PatchReport {
  readonly learningRate: number
  readonly outcomes: ReadonlyArray<{ readonly peer: string; readonly outcome: string }>
}

export interface RoundResult {
  /** 0 is the genesis model, before any training. */
  readonly round: number
  readonly peers: ReadonlyArray<PeerRound>
  /** Mean Validation accuracy of the peers' trained models; null in round 0. */
  readonly meanPeerAccuracy: number | null
  readonly meanTrainLoss: number | null
  /** Test accuracy and loss of the canonical (merged, or DiLoCo's global) model published this round. */
  readonly mergedAccuracy: number
  readonly mergedLoss: number
  readonly canonicalArtifact: string
  /** False when every merge weight was zero and the canonical model stayed as it was. */
  readonly merged: boolean
  readonly patch: PatchReport | null
  readonly wallMillis: number
}

export interface SeriesRun {
  readonly name: string
  readonly title: string
  readonly spec: SeriesSpec
  readonly rounds: ReadonlyArray<RoundResult>
}

export interface DemoRun {
  readonly workloadName: string
  readonly peers: number
  /** Every worker process the run started, restarts included. */
  readonly pids: ReadonlyArray<number>
  readonly startupMillis: number
  readonly series: ReadonlyArray<SeriesRun>
  readonly restarts: ReadonlyArray<Restart>
  readonly chaos: ChaosPlan | null
  /** The peer that forged its updates, if any. */
  readonly byzantine: string | null
  readonly innerSteps: number
  readonly outer: OuterSettings
}

export class MetricError extends Data.TaggedError("MetricError")<{
  readonly where: string
  readonly key: string
  readonly metrics: Metrics
}> {
  override get message(): string {
    return `${this.where}: expected a numeric metric ${JSON.stringify(this.key)}, got ${JSON.stringify(this.metrics)}`
  }
}

export type DemoRunError =
  | StartError
  | CallError
  | MetricError
  | PlatformError
  | ParameterPack.ParameterPackError
  | DiLoCo.PackMismatchError

const metric = (metrics: Metrics, key: string, where: string) => {
  const value = metrics[key]
  return typeof value === "number" ? Effect.succeed(value) : Effect.fail(new MetricError({ where, key, metrics }))
}

const mean = (values: ReadonlyArray<number>) => values.reduce((sum, value) => sum + value, 0) / values.length

const formatOutcome = (outcome: PatchOutcome) => typeof outcome === "string" ? outcome : `Rejected: ${outcome.Rejected}`

/** Payload seed of every training lease; Train-split evaluation samples seed 0, so leases never overlap it. */
const LEASE_SEED = 1

const pad2 = (n: number) => String(n).padStart(2, "0")

/**
 * Peer `index`'s lease in `round`: the next `microshardsPerWindow` ordinals
 * after every earlier round's and every lower-numbered peer's, so no
 * microshard is trained on twice (within a series; every series uses the
 * same leases).
 */
export const lease = (
  settings: Pick<RoundSettings, "peers" | "workload">,
  round: number,
  index: number,
): BatchRef & { readonly kind: "micro_epoch" } => {
  const { microshardsPerWindow, examplesPerMicroshard } = settings.workload
  const first = ((round - 1) * settings.peers + index) * microshardsPerWindow
  const ordinals = Array.from({ length: microshardsPerWindow }, (_, k) => first + k)
  return {
    kind: "micro_epoch",
    leaseId: `round-${round}-peer-${index}`,
    microshardIds: ordinals.map((ordinal) => `seed-${LEASE_SEED}-microshard-${ordinal}`),
    ordinals,
    // Generated on the worker from the payload: no bytes travel.
    bytesLen: 0,
    pipelineKind: "generated-dataset",
    payload: { seed: LEASE_SEED, examples_per_microshard: examplesPerMicroshard },
  }
}

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const value = yield* effect
    return [value, (yield* Clock.currentTimeMillis) - started] as const
  })

export const runRounds = (
  settings: RoundSettings,
  progress: Progress,
): Effect.Effect<
  DemoRun,
  DemoRunError,
  CommandExecutor.CommandExecutor | FileSystem.FileSystem | Path.Path
> =>
  Effect.scoped(Effect.gen(function* () {
    const cluster = yield* startCluster(settings, progress)
    const scope = yield* Effect.scope
    const chaos = Option.isSome(settings.chaos)
      ? yield* Effect.flatMap(
        planChaos(settings.chaos.value, {
          series: settings.series.length,
          rounds: settings.rounds,
          peers: settings.peers,
        }),
        (plan) => makeChaos(plan, progress, scope),
      )
      : undefined
    if (chaos !== undefined) {
      const { plan } = chaos
      yield* progress.emit(DemoEvent.Log({
        text: `chaos: peer-${plan.peer}'s worker will be SIGKILLed in round ${plan.round}${
          settings.series.length > 1 ? ` of series ${seriesName(settings.series[plan.series])}` : ""
        }`,
      }))
    }
    const series: Array<SeriesRun> = []
    for (let index = 0; index < settings.series.length; index++) {
      series.push(yield* runSeries(settings, cluster, index, progress, chaos))
    }
    return {
      workloadName: cluster.workloadName,
      peers: settings.peers,
      pids: cluster.pids(),
      startupMillis: cluster.startupMillis,
      series,
      restarts: cluster.restarts(),
      chaos: chaos?.plan ?? null,
      byzantine: settings.byzantine ? `peer-${settings.peers - 1}` : null,
      innerSteps: settings.innerSteps,
      outer: settings.outer,
    } satisfies DemoRun
  }))

const runSeries = (
  settings: RoundSettings,
  cluster: Cluster,
  seriesIndex: number,
  progress: Progress,
  chaos: Chaos | undefined,
) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const spec = settings.series[seriesIndex]
    const name = seriesName(spec)
    const dir = settings.series.length > 1 ? join(settings.artifactsDir, name) : settings.artifactsDir
    yield* fs.makeDirectory(dir, { recursive: true })
    const { workload } = settings
    const { reducer, peers } = cluster
    const say = (actor: string, text: string) => progress.emit(DemoEvent.Phase({ actor, text }))
    const idle = (actor: string) => progress.emit(DemoEvent.Idle({ actor }))
    const log = (text: string) => progress.emit(DemoEvent.Log({ text }))
    const prefix = settings.series.length > 1 ? `${name}: ` : ""
    const schemaHash = `burn-p2p-demo-${workload.kind}`
    const byzantineIndex = settings.byzantine ? settings.peers - 1 : -1
    /** Each peer's last task time, for where in it `--chaos` strikes. */
    const taskMillis = peers.map(() => 0)
    /** DiLoCo: each peer's inner optimiser state, carried from round to round. */
    const optimizerStates: Array<string | null> = peers.map(() => null)

    const release = (peer: Peer, modelId: string) =>
      modelId === "" ? Effect.void : Effect.ignore(peer.worker.releaseModel(modelId))

    const patchAll = (round: number, learningRate: number, summary: string) =>
      Effect.gen(function* () {
        yield* Ref.set(cluster.learningRate, Option.some(learningRate))
        const outcomes = yield* Effect.forEach(peers, (peer) =>
          recovering(peer, "the patch", progress, () =>
            Effect.gen(function* () {
              yield* say(peer.name, `applying a patch: ${summary}`)
              const outcome = formatOutcome(
                yield* peer.worker.applyPatch({
                  ...patchOf(learningRate, `${name}-round-${round}-learning-rate`),
                  summary,
                }),
              )
              yield* log(`${prefix}${peer.name}: patch learning_rate=${learningRate}: ${outcome}`)
              yield* idle(peer.name)
              return { peer: peer.name, outcome }
            })), { concurrency: "unbounded" })
        return { learningRate, outcomes } satisfies PatchReport
      })

    // A later series starts at the configured learning rate again.
    if (Option.isSome(yield* Ref.get(cluster.learningRate))) {
      yield* patchAll(0, workload.learningRate, `reset the learning rate to ${workload.learningRate}`)
    }

    /** Every peer takes the canonical model (and, in merge mode after round 0, reconciles its own into it). */
    const adopt = (source: CanonicalSource, reconcile: boolean) =>
      Effect.forEach(peers, (peer) =>
        recovering(peer, "adopting the canonical model", progress, (local) =>
          Effect.gen(function* () {
            yield* say(peer.name, "loading the canonical model")
            const canonical = source.kind === "artifact"
              ? yield* Effect.tap(
                peer.worker.initModel(workload.device),
                (id) =>
                  peer.worker.loadModelArtifact(id, source.path),
              )
              : yield* peer.worker.importParameterPack(workload.device, source.path)
            yield* Effect.gen(function* () {
              if (reconcile && local !== "") {
                yield* say(peer.name, `reconciling (RootEma, canonical weight ${settings.canonicalWeight})`)
                yield* peer.worker.reconcileCanonicalModel(local, canonical, {
                  RootEma: { canonicalWeight: settings.canonicalWeight },
                })
              }
            }).pipe(Effect.tapError(() => release(peer, canonical)))
            yield* release(peer, local)
            yield* setModel(peer, canonical)
            yield* idle(peer.name)
          })), { concurrency: "unbounded", discard: true })

    const evaluate = (modelId: string) =>
      Effect.gen(function* () {
        yield* say("reducer", "evaluating the canonical model on Test")
        const metrics = yield* reducer.evaluate(modelId, "Test")
        return {
          accuracy: yield* metric(metrics, "accuracy", "reducer evaluate"),
          loss: yield* metric(metrics, "loss", "reducer evaluate"),
        }
      })

    /** The reducer writes the merge-mode canonical model as an artifact and scores it. */
    const publishArtifact = (round: number, modelId: string) =>
      Effect.gen(function* () {
        const artifact = join(dir, `canonical-${pad2(round)}.safetensors`)
        yield* say("reducer", `publishing ${artifact}`)
        yield* reducer.materializeModelArtifact(modelId, artifact)
        return { artifact, ...(yield* evaluate(modelId)) }
      })

    /** DiLoCo's global pack, scored by the reducer from a model imported from it. */
    const scorePack = (pack: string) =>
      Effect.scoped(Effect.gen(function* () {
        yield* say("reducer", `importing ${pack}`)
        const modelId = yield* Effect.acquireRelease(
          reducer.importParameterPack(workload.device, pack),
          (id) =>
            Effect.ignore(reducer.releaseModel(id)),
        )
        return { artifact: pack, ...(yield* evaluate(modelId)) }
      }))

    // Round 0: the genesis model.
    const [genesis, genesisMillis] = yield* timed(Effect.gen(function* () {
      yield* progress.emit(DemoEvent.RoundStarted({ round: 0, rounds: settings.rounds }))
      yield* say("reducer", "initialising the canonical model")
      const model = yield* reducer.initModel(workload.device)
      let published: { artifact: string; accuracy: number; loss: number }
      let source: CanonicalSource
      if (spec.mode === "merge") {
        published = yield* publishArtifact(0, model)
        source = { kind: "artifact", path: published.artifact }
      } else {
        const pack = join(dir, `global-${pad2(0)}`)
        yield* say("reducer", `exporting ${pack}`)
        yield* reducer.exportParameterPack(model, pack, schemaHash)
        published = { artifact: pack, ...(yield* evaluate(model)) }
        yield* reducer.releaseModel(model)
        source = { kind: "pack", path: pack }
      }
      yield* idle("reducer")
      yield* Ref.set(cluster.canonical, Option.some(source))
      yield* adopt(source, false)
      return { model, published }
    }))
    const results: Array<RoundResult> = [{
      round: 0,
      peers: [],
      meanPeerAccuracy: null,
      meanTrainLoss: null,
      mergedAccuracy: genesis.published.accuracy,
      mergedLoss: genesis.published.loss,
      canonicalArtifact: genesis.published.artifact,
      merged: true,
      patch: null,
      wallMillis: genesisMillis,
    }]
    yield* log(`${prefix}round 0: genesis model, Test accuracy ${genesis.published.accuracy.toFixed(3)}`)
    let canonical = genesis.model
    let globalPack = genesis.published.artifact
    let outerState = DiLoCo.initialState

    /** Merge mode: one training window, then the candidate artifact (forged by a byzantine peer). */
    const trainWindow = (peer: Peer, round: number, modelId: string) =>
      Effect.gen(function* () {
        const batch = lease(settings, round, peer.index)
        const stem = join(dir, `round-${pad2(round)}-${peer.name}`)
        const byzantine = peer.index === byzantineIndex
        if (byzantine) {
          yield* peer.worker.exportParameterPack(modelId, `${stem}-base`, schemaHash)
        }
        yield* say(
          peer.name,
          `training on microshards ${batch.ordinals[0]}-${batch.ordinals[batch.ordinals.length - 1]}`,
        )
        const train = yield* peer.worker.trainWindow(modelId, [batch])
        const trainLoss = yield* metric(train, "loss", `${peer.name} train_window`)
        yield* say(peer.name, `evaluating on Validation (train loss ${trainLoss.toFixed(3)})`)
        const validation = yield* peer.worker.evaluate(modelId, "Validation")
        const artifact = `${stem}.safetensors`
        yield* say(peer.name, byzantine ? "publishing a forged candidate" : "publishing its candidate")
        if (byzantine) {
          yield* peer.worker.exportParameterPack(modelId, `${stem}-local`, schemaHash)
          yield* forgeUpdate({
            base: `${stem}-base`,
            local: `${stem}-local`,
            output: `${stem}-forged`,
            scale: settings.byzantineScale,
          })
          yield* Effect.scoped(Effect.gen(function* () {
            const forged = yield* Effect.acquireRelease(
              peer.worker.importParameterPack(workload.device, `${stem}-forged`),
              (id) =>
                Effect.ignore(peer.worker.releaseModel(id)),
            )
            yield* peer.worker.materializeModelArtifact(forged, artifact)
          }))
        } else {
          yield* peer.worker.materializeModelArtifact(modelId, artifact)
        }
        yield* say(peer.name, "waiting for the canonical model")
        return {
          peer: peer.name,
          ordinals: batch.ordinals,
          examples: yield* metric(train, "examples", `${peer.name} train_window`),
          steps: yield* metric(train, "steps", `${peer.name} train_window`),
          learningRate: yield* metric(train, "learning_rate", `${peer.name} train_window`),
          trainLoss,
          trainAccuracy: yield* metric(train, "accuracy", `${peer.name} train_window`),
          validationLoss: yield* metric(validation, "loss", `${peer.name} evaluate`),
          validationAccuracy: yield* metric(validation, "accuracy", `${peer.name} evaluate`),
          artifact,
          byzantine,
        } satisfies PeerRound
      })

    /** DiLoCo: H inner steps from the global pack, exported as the peer's pack (forged by a byzantine peer). */
    const innerLoop = (peer: Peer, round: number, modelId: string) =>
      Effect.gen(function* () {
        const batch = lease(settings, round, peer.index)
        const pack = join(dir, `round-${pad2(round)}-${peer.name}`)
        const byzantine = peer.index === byzantineIndex
        yield* say(
          peer.name,
          `inner loop: ${settings.innerSteps} steps on microshards ${batch.ordinals[0]}-${
            batch.ordinals[batch.ordinals.length - 1]
          }`,
        )
        const result = yield* peer.worker.runInnerLoop(modelId, [batch], {
          numInnerSteps: settings.innerSteps,
          outputParameterPackPath: pack,
          modelSchemaHash: schemaHash,
          innerOptimizerStatePath: optimizerStates[peer.index],
          requireExactSteps: true,
        })
        optimizerStates[peer.index] = result.innerOptimizerStatePath ?? null
        const { metrics } = result
        const trainLoss = yield* metric(metrics, "loss", `${peer.name} run_inner_loop`)
        yield* say(peer.name, `evaluating on Validation (inner loss ${trainLoss.toFixed(3)})`)
        const validation = yield* peer.worker.evaluate(modelId, "Validation")
        if (byzantine) {
          yield* say(peer.name, "forging its update")
          yield* forgeUpdate({ base: globalPack, local: pack, output: pack, scale: settings.byzantineScale })
        }
        yield* say(peer.name, "waiting for the next global pack")
        return {
          peer: peer.name,
          ordinals: batch.ordinals,
          examples: yield* metric(metrics, "examples", `${peer.name} run_inner_loop`),
          steps: result.stepsCompleted,
          learningRate: yield* metric(metrics, "learning_rate", `${peer.name} run_inner_loop`),
          trainLoss,
          trainAccuracy: yield* metric(metrics, "accuracy", `${peer.name} run_inner_loop`),
          validationLoss: yield* metric(validation, "loss", `${peer.name} evaluate`),
          validationAccuracy: yield* metric(validation, "accuracy", `${peer.name} evaluate`),
          artifact: pack,
          byzantine,
        } satisfies PeerRound
      })

    for (let round = 1; round <= settings.rounds; round++) {
      const strikes = chaos !== undefined && chaos.plan.series === seriesIndex && chaos.plan.round === round
      const [result, wallMillis] = yield* timed(Effect.gen(function* () {
        yield* progress.emit(DemoEvent.RoundStarted({ round, rounds: settings.rounds }))
        const patch = round === settings.patchRound
          ? yield* patchAll(
            round,
            settings.patchLearningRate,
            `lower the learning rate from ${workload.learningRate} to ${settings.patchLearningRate}`,
          )
          : null

        const candidates = yield* Effect.forEach(peers, (peer) =>
          Effect.gen(function* () {
            if (strikes && chaos.plan.peer === peer.index) {
              yield* chaos.strike(peer, taskMillis[peer.index] > 0 ? taskMillis[peer.index] : genesisMillis)
            }
            const [candidate, millis] = yield* timed(
              recovering(
                peer,
                `round ${round}`,
                progress,
                (modelId) =>
                  spec.mode === "merge" ? trainWindow(peer, round, modelId) : innerLoop(peer, round, modelId),
              ),
            )
            taskMillis[peer.index] = millis
            return candidate
          }), { concurrency: "unbounded" })

        let published: { artifact: string; accuracy: number; loss: number }
        let merged = true
        let source: CanonicalSource
        if (spec.mode === "merge") {
          yield* say("reducer", `loading ${candidates.length} candidates`)
          const mergeCandidates: Array<MergeCandidate> = []
          for (const candidate of candidates) {
            const modelId = yield* reducer.initModel(workload.device)
            yield* reducer.loadModelArtifact(modelId, candidate.artifact)
            mergeCandidates.push({
              peerId: candidate.peer,
              headId: `${candidate.peer}-round-${round}`,
              artifactId: candidate.artifact,
              modelId,
              sampleWeight: candidate.examples,
              qualityWeight: candidate.validationAccuracy,
            })
          }
          yield* say("reducer", "merging (WeightedMean) and applying root EMA")
          const mergedModel = yield* reducer.mergeCandidateModels(canonical, mergeCandidates, "WeightedMean")
          if (Option.isSome(mergedModel)) {
            yield* reducer.applySingleRootEma(canonical, mergedModel.value, "WeightedMean")
          } else {
            yield* log(`${prefix}round ${round}: every merge weight is zero; the canonical model stays as it was`)
          }
          const next = Option.getOrElse(mergedModel, () => canonical)
          published = yield* publishArtifact(round, next)
          yield* Effect.forEach(mergeCandidates, ({ modelId }) => reducer.releaseModel(modelId))
          if (next !== canonical) yield* reducer.releaseModel(canonical)
          canonical = next
          merged = Option.isSome(mergedModel)
          source = { kind: "artifact", path: published.artifact }
        } else {
          const next = join(dir, `global-${pad2(round)}`)
          const aggregation = spec.aggregation
          yield* say("owner", `outer step: ${policyName(aggregation)}, SGD lr ${settings.outer.learningRate}`)
          const outer = yield* outerRound({
            base: globalPack,
            locals: candidates.map((candidate) => candidate.artifact),
            next,
            aggregation,
            outer: settings.outer,
            state: outerState,
          })
          yield* idle("owner")
          outerState = outer.state
          globalPack = next
          published = yield* scorePack(next)
          source = { kind: "pack", path: next }
        }
        yield* idle("reducer")

        // A restart from here on reloads the new canonical model.
        yield* Ref.set(cluster.canonical, Option.some(source))
        yield* adopt(source, spec.mode === "merge")
        // The round ends with the killed peer back and holding the current model.
        if (strikes) yield* chaos.done
        return {
          round,
          peers: candidates,
          meanPeerAccuracy: mean(candidates.map((candidate) => candidate.validationAccuracy)),
          meanTrainLoss: mean(candidates.map((candidate) => candidate.trainLoss)),
          mergedAccuracy: published.accuracy,
          mergedLoss: published.loss,
          canonicalArtifact: published.artifact,
          merged,
          patch,
        }
      }))
      results.push({ ...result, wallMillis })
      yield* log(
        `${prefix}round ${round}: mean peer Validation accuracy ${result.meanPeerAccuracy.toFixed(3)}, ${
          spec.mode === "merge" ? "merged" : "global"
        } Test accuracy ${result.mergedAccuracy.toFixed(3)}, loss ${result.mergedLoss.toFixed(3)} (${
          (wallMillis / 1000).toFixed(2)
        }s)`,
      )
    }
    // The series' last canonical model; the peers keep theirs (the next series releases them).
    if (spec.mode === "merge") yield* reducer.releaseModel(canonical)
    return { name, title: seriesTitle(spec), spec, rounds: results } satisfies SeriesRun
  })
