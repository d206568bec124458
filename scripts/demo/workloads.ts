/**
 * The two workloads the demo can drive, with the settings that make the
 * default run (4 peers x 5 rounds) short and still show learning.
 */
import * as Duration from "effect/Duration"
import type { JsonValue } from "../../src/Protocol.ts"
import type { OuterSettings } from "./outer.ts"

export type WorkloadKind = "torch" | "reference"

export interface WorkloadSpec {
  readonly kind: WorkloadKind
  readonly factory: string
  readonly learningRate: number
  readonly examplesPerMicroshard: number
  /** Microshards each peer trains on per round (its lease). */
  readonly microshardsPerWindow: number
  /** Optimiser steps of one merge-mode training window: DiLoCo's default H, for equal inner compute. */
  readonly stepsPerWindow: number
  /** DiLoCo's default outer SGD. */
  readonly outer: OuterSettings
  /** Workload-specific config keys, beside the shared ones `workloadConfig` adds. */
  readonly extraConfig: { readonly [key: string]: JsonValue }
  readonly device: string
  /** Importing torch takes seconds per process, and every worker starts at once on few cores. */
  readonly connectTimeout: Duration.Duration
}

export const workloads: Readonly<Record<WorkloadKind, WorkloadSpec>> = {
  reference: {
    kind: "reference",
    factory: "burn_p2p_python_runtime.reference_workload:make",
    // Small enough steps that accuracy climbs over several rounds rather than
    // saturating in the first (about 0.31 -> 0.89 on Test over 5 rounds).
    learningRate: 0.05,
    examplesPerMicroshard: 64,
    microshardsPerWindow: 4,
    // 4 x 64 examples in minibatches of 16, one pass.
    stepsPerWindow: 16,
    outer: { learningRate: 0.9, momentum: 0.3, nesterov: false },
    extraConfig: { batch_size: 16 },
    device: "cpu",
    connectTimeout: Duration.seconds(30),
  },
  torch: {
    kind: "torch",
    factory: "burn_p2p_python_runtime.torch_workload:make",
    learningRate: 0.01,
    examplesPerMicroshard: 128,
    microshardsPerWindow: 8,
    // 8 x 128 examples in minibatches of 32, two passes (local_epochs 2).
    stepsPerWindow: 64,
    outer: { learningRate: 0.9, momentum: 0.3, nesterov: false },
    // One thread per worker: the peers already share the cores.
    extraConfig: { threads: 1 },
    device: "auto",
    connectTimeout: Duration.seconds(120),
  },
}

/** Every worker (peers and reducer) gets the same config, so they share the dataset and the genesis model. */
export const workloadConfig = (spec: WorkloadSpec): { readonly [key: string]: JsonValue } => ({
  ...spec.extraConfig,
  dataset_seed: 7,
  seed: 11,
  learning_rate: spec.learningRate,
  examples_per_microshard: spec.examplesPerMicroshard,
})
