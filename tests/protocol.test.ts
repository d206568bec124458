import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { spawnSync } from "node:child_process"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { BatchRef, MergeCandidate, ReconcileStrategy, Rpcs, RuntimePatch } from "../src/Protocol.ts"
import { testPython } from "./helpers.ts"

const jsonRoundTrip = <A, I>(schema: Schema.Schema<A, I>) => (value: A) => {
  const text = JSON.stringify(Schema.encodeSync(schema)(value))
  const wire = JSON.parse(text)
  // Compared as JSON text: JSON has no -0, so `toEqual` on values would fail on it.
  expect(JSON.stringify(Schema.encodeSync(schema)(Schema.decodeUnknownSync(schema)(wire)))).toBe(text)
  return wire
}

/** Every key of a JSON value, at any depth, except inside the opaque `payload`. */
const keys = (value: unknown): Array<string> =>
  typeof value !== "object" || value === null
    ? []
    : Array.isArray(value)
    ? value.flatMap(keys)
    : Object.entries(value).flatMap(([key, inner]) => [key, ...(key === "payload" ? [] : keys(inner))])

describe("protocol schemas", () => {
  it.prop("every BatchRef survives JSON, with snake_case keys on the wire", [BatchRef], ([batch]) => {
    const wire = jsonRoundTrip(BatchRef)(batch)
    expect(keys(wire).filter((key) => /[A-Z]/.test(key))).toEqual([])
  })

  it.prop("every MergeCandidate, RuntimePatch and ReconcileStrategy survives JSON", [
    MergeCandidate,
    RuntimePatch,
    ReconcileStrategy,
  ], ([candidate, patch, strategy]) => {
    jsonRoundTrip(MergeCandidate)(candidate)
    jsonRoundTrip(RuntimePatch)(patch)
    jsonRoundTrip(ReconcileStrategy)(strategy)
  })

  it("uses serde's encodings for enums and renames fields at the edge", () => {
    expect(Schema.encodeSync(ReconcileStrategy)({ RootEma: { canonicalWeight: 0.25 } })).toEqual({
      RootEma: { canonical_weight: 0.25 },
    })
    const params = Schema.encodeSync(Rpcs.mergeCandidateModels.params)({
      baseModelId: "m1",
      candidates: [{ peerId: "p", headId: "h", artifactId: "a", modelId: "m2", sampleWeight: 2, qualityWeight: 0.5 }],
      policy: { Custom: "median" },
    })
    expect(params).toEqual({
      base_model_id: "m1",
      candidates: [{
        peer_id: "p",
        head_id: "h",
        artifact_id: "a",
        model_id: "m2",
        sample_weight: 2,
        quality_weight: 0.5,
      }],
      policy: { Custom: "median" },
    })
  })

  it("decodes results leniently where the reference is: acks with extra fields, missing results", () => {
    expect(Schema.decodeUnknownSync(Rpcs.loadModelArtifact.result)({ bytes: 12 })).toBeUndefined()
    expect(Schema.decodeUnknownSync(Rpcs.releaseModel.result)(null)).toBeUndefined()
    expect(() => Schema.decodeUnknownSync(Rpcs.releaseModel.result)("done")).toThrow()
    expect(Schema.decodeUnknownSync(Rpcs.mergeCandidateModels.result)({ model_id: null })).toEqual({ modelId: null })
  })

  it("refuses results that break their schema", () => {
    expect(() => Schema.decodeUnknownSync(Rpcs.trainWindow.result)({ metrics: { loss: [1] } })).toThrow()
    expect(() => Schema.decodeUnknownSync(Rpcs.hello.result)({ protocol_version: "1", workload_name: "x" })).toThrow()
    expect(() => Schema.decodeUnknownSync(Rpcs.initModel.result)({})).toThrow()
  })
})

it.live("Rpcs and the Python worker's dispatch table name the same methods", () =>
  Effect.sync(() => {
    const script =
      "from burn_p2p_python_runtime.dispatch import Dispatcher\nprint(' '.join(sorted(Dispatcher(None)._methods)))"
    const python = spawnSync(testPython, ["-c", script], {
      encoding: "utf8",
      env: { ...process.env, PYTHONPATH: fileURLToPath(new URL("../python", import.meta.url)) },
    })
    expect(python.status, python.stderr).toBe(0)
    const dispatched = python.stdout.trim().split(" ")
    expect(dispatched).toEqual(Object.values(Rpcs).map((rpc) => rpc.method).sort())
  }))
