/**
 * Deno's permission errors, named by the flag that grants what was refused.
 * Under Deno without a permission, Node-compatible APIs throw `NotCapable`
 * ("Requires run access to ..."); our errors say which flag to add.
 *
 * @internal
 */

/**
 * The `--allow-...` flag a refused operation needs, or `undefined` when the
 * error is not a permission error.
 *
 * @internal
 */
export const permissionFlag = (
  error: unknown,
  hint: { readonly net?: string; readonly path?: string } = {},
): string | undefined => {
  const message = errorText(error)
  const match = /Requires (\w+) access(?: to "?([^",]*)"?)?/.exec(message)
  if (match === null) return undefined
  const kind = match[1]
  // Run and env cannot be narrowed: signalling the worker's process group needs all of --allow-run,
  // and spawning reads the whole environment.
  if (kind === "run" || kind === "env") return `--allow-${kind}`
  const target = match[2] ?? (kind === "net" ? hint.net : hint.path)
  return target === undefined || target === "" ? `--allow-${kind}` : `--allow-${kind}=${target}`
}

const errorText = (error: unknown): string => {
  if (error === null || typeof error !== "object") return String(error)
  const parts: Array<string> = []
  let current: unknown = error
  for (let i = 0; i < 4 && current !== null && typeof current === "object"; i++) {
    const record = current as { message?: unknown; description?: unknown; cause?: unknown; name?: unknown }
    for (const field of [record.name, record.message, record.description]) {
      if (typeof field === "string") parts.push(field)
    }
    current = record.cause
  }
  return parts.join(" ")
}
