/**
 * The wire protocol, declared once: every JSON shape of PROTOCOL.md as a
 * Schema (camelCase in TypeScript, snake_case on the wire) and, in `Rpcs`,
 * each method's wire name with its params and result schemas. The client,
 * the tests and the README's method table all read from here. The shapes
 * live in `Messages.ts` (protocol 1), `BatchRef.ts` (batches) and
 * `PackMessages.ts` (protocol 2), the methods in `Rpc.ts`.
 *
 * Numbers: JSON cannot tell `1` from `1.0` once parsed in JavaScript, so every
 * metric and patch number is a plain `number`; integers past 2^53 lose
 * precision, and a JavaScript `1.0` reaches Python as the int `1`.
 *
 * @since 0.1.0
 */

/**
 * The protocol versions this client speaks (protocol 2 is a superset of 1).
 *
 * @since 0.2.0
 * @category models
 */
export const PROTOCOL_VERSIONS: ReadonlyArray<number> = [1, 2]

export * from "./BatchRef.ts"
export * from "./Messages.ts"
export * from "./PackMessages.ts"
export * from "./Rpc.ts"
