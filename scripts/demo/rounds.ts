/**
 * The demo's round logic: N peers and one reducer, each its own Python worker
 * process, for R rounds.
 *
 * Round 0 is the genesis: the reducer initialises the canonical model,
 * publishes it as an artifact and evaluates it; every peer loads it. Then, in
 * each round, every peer trains one window on its own lease of microshards
 * (no ordinal is leased twice, across peers and rounds), evaluates on the
 * Validation split and publishes its model as a candidate artifact; the
 * reducer loads the candidates into fresh models, merges them (weight =
 * examples seen x validation accuracy), pulls the result toward the previous
 * canonical model (root EMA), publishes it and evaluates it on the Test split;
 * every peer loads the new canonical model and reconciles its own model with
 * it. At the start of round `patchRound` every peer gets a runtime patch that
 * lowers its learning rate.
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { join } from "node:path"
import type { BatchRef, MergeCandidate, Metrics, PatchOutcome } from "../../src/Protocol.ts"
import * as PythonWorker from "../../src/PythonWorker.ts"
import type { CallError, StartError } from "../../src/WorkerError.ts"
import { DemoEvent, type Progress } from "./progress.ts"
import { workloadConfig, type WorkloadSpec } from "./workloads.ts"

export interface RoundSettings {
  readonly python: string
  readonly workload: WorkloadSpec
  readonly peers: number
  readonly rounds: number
  /** Absolute; candidate and canonical artifacts are written here. */
  readonly artifactsDir: string
  /** Weight of the incoming canonical model when a peer reconciles (`RootEma`). */
  readonly canonicalWeight: number
  /** The round at whose start the learning rate is lowered, to `patchLearningRate`. */
  readonly patchRound: number
  readonly patchLearningRate: number
  readonly callTimeout: Duration.DurationInput
}

/** Lowers the learning rate halfway through: round 3 of 5, round 2 of 2. */
export const defaultSettings = (
  settings: Pick<RoundSettings, "python" | "workload" | "peers" | "rounds" | "artifactsDir">,
): RoundSettings => ({
  ...settings,
  canonicalWeight: 0.75,
  patchRound: Math.min(settings.rounds, Math.floor(settings.rounds / 2) + 1),
  patchLearningRate: settings.workload.learningRate / 2,
  callTimeout: Duration.minutes(2),
})

export interface PeerRound {
  readonly peer: string
  readonly ordinals: ReadonlyArray<number>
  readonly examples: number
  readonly learningRate: number
  readonly trainLoss: number
  readonly trainAccuracy: number
  readonly validationLoss: number
  readonly validationAccuracy: number
  readonly artifact: string
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
  /** Test accuracy and loss of the canonical model published this round. */
  readonly mergedAccuracy: number
  readonly mergedLoss: number
  readonly canonicalArtifact: string
  /** False when every merge weight was zero and the canonical model stayed as it was. */
  readonly merged: boolean
  readonly patch: PatchReport | null
  readonly wallMillis: number
}

export interface DemoRun {
  readonly workloadName: string
  readonly peers: number
  readonly pids: ReadonlyArray<number>
  readonly startupMillis: number
  readonly rounds: ReadonlyArray<RoundResult>
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

export type DemoRunError = StartError | CallError | MetricError

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
 * microshard is trained on twice.
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

export const runRounds = (
  settings: RoundSettings,
  progress: Progress,
): Effect.Effect<DemoRun, DemoRunError, CommandExecutor.CommandExecutor | FileSystem.FileSystem> =>
  Effect.scoped(Effect.gen(function* () {
    const { workload } = settings
    const peerNames = Array.from({ length: settings.peers }, (_, index) => `peer-${index}`)
    const names = ["reducer", ...peerNames]
    const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function* () {
        const started = yield* Clock.currentTimeMillis
        const value = yield* effect
        return [value, (yield* Clock.currentTimeMillis) - started] as const
      })

    const startWorker = (name: string) =>
      Effect.gen(function* () {
        // Finalizers run in reverse: "stopping" before the worker's own
        // (shutdown, then terminate), "stopped" once its process is gone.
        yield* Effect.addFinalizer(() => progress.emit(DemoEvent.Phase({ actor: name, text: "stopped" })))
        const worker = yield* PythonWorker.make({
          workloadFactory: workload.factory,
          workloadConfig: workloadConfig(workload),
          pythonExecutable: settings.python,
          connectTimeout: workload.connectTimeout,
          callTimeout: settings.callTimeout,
        })
        yield* Effect.addFinalizer(() => progress.emit(DemoEvent.Phase({ actor: name, text: "stopping" })))
        yield* progress.emit(DemoEvent.Log({ text: `${name} ready: pid ${worker.pid}, ${worker.info.workloadName}` }))
        yield* progress.emit(DemoEvent.Idle({ actor: name }))
        return worker
      }).pipe(Effect.sequentialFinalizers)

    yield* Effect.forEach(names, (actor) => progress.emit(DemoEvent.Phase({ actor, text: "starting worker" })))
    // Every worker owns a sequential scope (its stop sequence runs in order);
    // the workers themselves start, and stop, all at once.
    const [workers, startupMillis] = yield* timed(
      Effect.forEach(names, startWorker, { concurrency: "unbounded" }).pipe(Effect.parallelFinalizers),
    )
    const [reducer, ...peers] = workers
    const say = (actor: string, text: string) => progress.emit(DemoEvent.Phase({ actor, text }))
    const idle = (actor: string) => progress.emit(DemoEvent.Idle({ actor }))
    const log = (text: string) => progress.emit(DemoEvent.Log({ text }))

    const publish = (round: number, modelId: string) =>
      Effect.gen(function* () {
        const artifact = join(settings.artifactsDir, `canonical-${pad2(round)}.safetensors`)
        yield* say("reducer", `publishing ${artifact}`)
        yield* reducer.materializeModelArtifact(modelId, artifact)
        yield* say("reducer", "evaluating the canonical model on Test")
        const metrics = yield* reducer.evaluate(modelId, "Test")
        return {
          artifact,
          accuracy: yield* metric(metrics, "accuracy", "reducer evaluate"),
          loss: yield* metric(metrics, "loss", "reducer evaluate"),
        }
      })

    /** Every peer loads the canonical artifact into a new model and reconciles its own model into it. */
    const adopt = (artifact: string, locals: ReadonlyArray<Option.Option<string>>) =>
      Effect.forEach(peers, (peer, index) =>
        Effect.gen(function* () {
          const name = peerNames[index]
          yield* say(name, "loading the canonical model")
          const canonical = yield* peer.initModel(workload.device)
          yield* peer.loadModelArtifact(canonical, artifact)
          const local = locals[index]
          if (Option.isSome(local)) {
            yield* say(name, `reconciling (RootEma, canonical weight ${settings.canonicalWeight})`)
            yield* peer.reconcileCanonicalModel(local.value, canonical, {
              RootEma: { canonicalWeight: settings.canonicalWeight },
            })
            yield* peer.releaseModel(local.value)
          }
          yield* idle(name)
          return canonical
        }), { concurrency: "unbounded" })

    const applyPatch = (round: number) =>
      Effect.gen(function* () {
        const learningRate = settings.patchLearningRate
        const outcomes = yield* Effect.forEach(peers, (peer, index) =>
          Effect.gen(function* () {
            yield* say(peerNames[index], `applying a patch: learning rate ${learningRate}`)
            const outcome = formatOutcome(
              yield* peer.applyPatch({
                patchId: `round-${round}-lower-learning-rate`,
                class: "Hot",
                summary: `lower the learning rate from ${workload.learningRate} to ${learningRate}`,
                values: { learning_rate: learningRate },
                requiredClientCapabilities: [],
              }),
            )
            yield* log(`${peerNames[index]}: patch learning_rate=${learningRate}: ${outcome}`)
            return { peer: peerNames[index], outcome }
          }), { concurrency: "unbounded" })
        return { learningRate, outcomes } satisfies PatchReport
      })

    // Round 0: the genesis model.
    const [genesis, genesisMillis] = yield* timed(Effect.gen(function* () {
      yield* progress.emit(DemoEvent.RoundStarted({ round: 0, rounds: settings.rounds }))
      yield* say("reducer", "initialising the canonical model")
      const canonical = yield* reducer.initModel(workload.device)
      const published = yield* publish(0, canonical)
      yield* idle("reducer")
      const locals = yield* adopt(published.artifact, peers.map(() => Option.none()))
      return { canonical, published, locals }
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
    yield* log(`round 0: genesis model, Test accuracy ${genesis.published.accuracy.toFixed(3)}`)
    let canonical = genesis.canonical
    let locals = genesis.locals

    for (let round = 1; round <= settings.rounds; round++) {
      const [result, wallMillis] = yield* timed(Effect.gen(function* () {
        yield* progress.emit(DemoEvent.RoundStarted({ round, rounds: settings.rounds }))
        const patch = round === settings.patchRound ? yield* applyPatch(round) : null

        const candidates = yield* Effect.forEach(peers, (peer, index) =>
          Effect.gen(function* () {
            const name = peerNames[index]
            const batch = lease(settings, round, index)
            const ordinals = batch.ordinals
            yield* say(name, `training on microshards ${ordinals[0]}-${ordinals[ordinals.length - 1]}`)
            const train = yield* peer.trainWindow(locals[index], [batch])
            const trainLoss = yield* metric(train, "loss", `${name} train_window`)
            yield* say(name, `evaluating on Validation (train loss ${trainLoss.toFixed(3)})`)
            const validation = yield* peer.evaluate(locals[index], "Validation")
            const artifact = join(settings.artifactsDir, `round-${pad2(round)}-${name}.safetensors`)
            yield* say(name, "publishing its candidate")
            yield* peer.materializeModelArtifact(locals[index], artifact)
            yield* say(name, "waiting for the canonical model")
            return {
              peer: name,
              ordinals,
              examples: yield* metric(train, "examples", `${name} train_window`),
              learningRate: yield* metric(train, "learning_rate", `${name} train_window`),
              trainLoss,
              trainAccuracy: yield* metric(train, "accuracy", `${name} train_window`),
              validationLoss: yield* metric(validation, "loss", `${name} evaluate`),
              validationAccuracy: yield* metric(validation, "accuracy", `${name} evaluate`),
              artifact,
            } satisfies PeerRound
          }), { concurrency: "unbounded" })

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
        const merged = yield* reducer.mergeCandidateModels(canonical, mergeCandidates, "WeightedMean")
        if (Option.isSome(merged)) {
          yield* reducer.applySingleRootEma(canonical, merged.value, "WeightedMean")
        } else {
          yield* log(`round ${round}: every merge weight is zero; the canonical model stays as it was`)
        }
        const next = Option.getOrElse(merged, () => canonical)
        const published = yield* publish(round, next)
        yield* Effect.forEach(mergeCandidates, ({ modelId }) => reducer.releaseModel(modelId))
        if (next !== canonical) yield* reducer.releaseModel(canonical)
        canonical = next
        yield* idle("reducer")

        locals = yield* adopt(published.artifact, locals.map(Option.some))
        return {
          round,
          peers: candidates,
          meanPeerAccuracy: mean(candidates.map((candidate) => candidate.validationAccuracy)),
          meanTrainLoss: mean(candidates.map((candidate) => candidate.trainLoss)),
          mergedAccuracy: published.accuracy,
          mergedLoss: published.loss,
          canonicalArtifact: published.artifact,
          merged: Option.isSome(merged),
          patch,
        }
      }))
      results.push({ ...result, wallMillis })
      yield* log(
        `round ${round}: mean peer Validation accuracy ${result.meanPeerAccuracy.toFixed(3)}, merged Test accuracy ${
          result.mergedAccuracy.toFixed(3)
        }, loss ${result.mergedLoss.toFixed(3)} (${(wallMillis / 1000).toFixed(2)}s)`,
      )
    }
    return {
      workloadName: reducer.info.workloadName,
      peers: settings.peers,
      pids: workers.map((worker) => worker.pid),
      startupMillis,
      rounds: results,
    }
  }))
