/**
 * Checks on values before they become JSON: the nesting depth both sides
 * accept, cycles, and values JSON cannot carry. A recursive Schema (our
 * `JsonValue`) or `JSON.stringify` meets a 10,000-deep or circular value with
 * a stack overflow, so this walk runs first and stops at the limit.
 *
 * @internal
 */

/**
 * The deepest nesting of arrays and objects a request's params (and the
 * workload config) may have; the worker accepts at least this much.
 *
 * @internal
 */
export const MAX_JSON_DEPTH = 256

/** Longest quote of a value inside an error. */
const QUOTE_CHARS = 200

/**
 * At most `max` characters of `text`, saying how long the rest was.
 *
 * @internal
 */
export const bounded = (text: string, max: number = QUOTE_CHARS): string =>
  text.length <= max ? text : `${text.slice(0, max)}...(${text.length} chars)`

/**
 * Where a value breaks the JSON rules, and how, without quoting it (a config
 * may hold credentials); `undefined` when it is fine.
 *
 * `plainJson` also refuses what JSON cannot carry (functions, symbols,
 * bigints, NaN, Infinity, class instances); otherwise only depth and cycles
 * are checked, since the params' own schema judges the rest.
 *
 * @internal
 */
export const jsonProblem = (value: unknown, options: { readonly plainJson: boolean }): string | undefined => {
  const onPath = new Set<object>()
  // The keys down to the node being visited: a path is spelled out only for a problem.
  const keys: Array<string | number> = []
  const here = () => at(keys.map((key) => typeof key === "number" ? `[${key}]` : `.${bounded(key, 40)}`).join(""))
  const visit = (node: unknown, depth: number): string | undefined => {
    if (node === null || typeof node === "string" || typeof node === "boolean") return undefined
    if (typeof node === "number") {
      return options.plainJson && !Number.isFinite(node) ? `${here()} is ${node}, which JSON cannot carry` : undefined
    }
    if (typeof node !== "object") {
      return options.plainJson || typeof node === "bigint" || typeof node === "function"
        ? `${here()} is a ${typeof node}, which JSON cannot carry`
        : undefined
    }
    if (onPath.has(node)) return `${here()} refers back to one of its own containers (a circular value)`
    if (depth > MAX_JSON_DEPTH) return `${here()} is nested deeper than ${MAX_JSON_DEPTH} levels`
    const isArray = Array.isArray(node)
    if (options.plainJson && !isArray) {
      const proto = Object.getPrototypeOf(node)
      if (proto !== Object.prototype && proto !== null) {
        return `${here()} is a ${proto?.constructor?.name ?? "class"} instance, not a plain object`
      }
    }
    onPath.add(node)
    try {
      if (isArray) {
        for (let i = 0; i < node.length; i++) {
          keys.push(i)
          const problem = visit(node[i], depth + 1)
          keys.pop()
          if (problem !== undefined) return problem
        }
      } else {
        for (const key in node) {
          if (!Object.hasOwn(node, key)) continue
          keys.push(key)
          const problem = visit((node as Record<string, unknown>)[key], depth + 1)
          keys.pop()
          if (problem !== undefined) return problem
        }
      }
      return undefined
    } finally {
      onPath.delete(node)
    }
  }
  return visit(value, 1)
}

const at = (path: string) => path === "" ? "the value" : `the value at ${path.replace(/^\./, "")}`
