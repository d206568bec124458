/** `jsonProblem`: where a value breaks the JSON rules, named by its path. */
import { describe, expect, it } from "@effect/vitest"
import { jsonProblem } from "../src/internal/json.ts"

describe("jsonProblem", () => {
  it("names the path of the first problem, and nothing for a fine value", () => {
    const circular: Record<string, unknown> = { a: [1, { b: null }] }
    ;((circular.a as Array<unknown>)[1] as Record<string, unknown>).c = circular
    expect(jsonProblem(circular, { plainJson: false })).toBe(
      "the value at a[1].c refers back to one of its own containers (a circular value)",
    )
    expect(jsonProblem({ x: [0, [NaN]] }, { plainJson: true })).toBe(
      "the value at x[1][0] is NaN, which JSON cannot carry",
    )
    expect(jsonProblem({ ok: [1, "a", { fine: true }], then: { f: () => 1 } }, { plainJson: false })).toBe(
      "the value at then.f is a function, which JSON cannot carry",
    )
    expect(jsonProblem(1n, { plainJson: false })).toBe("the value is a bigint, which JSON cannot carry")
    expect(jsonProblem({ a: [1, { b: "c" }], d: null }, { plainJson: true })).toBeUndefined()
    // A sibling that repeats a container is no cycle.
    const shared = { s: 1 }
    expect(jsonProblem([shared, shared], { plainJson: false })).toBeUndefined()
  })
})
