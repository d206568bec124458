/**
 * Schema helpers for snake_case wire names, typed in full so that JSR need not
 * infer them, and the wire's number schemas.
 *
 * @internal
 */
import * as Schema from "effect/Schema"

/** A required field read from `Key` on the wire and named in camelCase in TypeScript. */
export type Wire<S extends Schema.Schema.All, Key extends string> = Schema.PropertySignature<
  ":",
  Schema.Schema.Type<S>,
  Key,
  ":",
  Schema.Schema.Encoded<S>,
  false,
  Schema.Schema.Context<S>
>

/** An optional field (absent when unknown) read from `Key` on the wire. */
export type OptionalWire<S extends Schema.Schema.All, Key extends string> = Schema.PropertySignature<
  "?:",
  Schema.Schema.Type<S> | undefined,
  Key,
  "?:",
  Schema.Schema.Encoded<S> | undefined,
  false,
  Schema.Schema.Context<S>
>

/** A field with a default when absent on the wire, read from `Key`. */
export type DefaultWire<S extends Schema.Schema.All, Key extends string> = Schema.PropertySignature<
  ":",
  Schema.Schema.Type<S>,
  Key,
  "?:",
  Schema.Schema.Encoded<S> | undefined,
  true,
  Schema.Schema.Context<S>
>

/**
 * An unsigned 32-bit integer.
 *
 * @internal
 */
export const U32: Schema.filter<typeof Schema.Int> = Schema.Int.pipe(Schema.between(0, 0xffff_ffff))
/**
 * An unsigned 64-bit integer, as far as JavaScript numbers go.
 *
 * @internal
 */
export const U64: typeof Schema.NonNegativeInt = Schema.NonNegativeInt
/**
 * A float: JSON has no NaN or Infinity.
 *
 * @internal
 */
export const F64: typeof Schema.JsonNumber = Schema.JsonNumber

/** @internal */
export const wire = <S extends Schema.Schema.All, const Key extends string>(schema: S, key: Key): Wire<S, Key> =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

/** @internal */
export const optionalWire = <S extends Schema.Schema.All, const Key extends string>(
  schema: S,
  key: Key,
): OptionalWire<S, Key> => Schema.optional(schema).pipe(Schema.fromKey(key)) as OptionalWire<S, Key>

/** @internal */
export const defaultWire = <S extends Schema.Schema.All, const Key extends string>(
  schema: S,
  key: Key,
  value: () => Schema.Schema.Type<S>,
): DefaultWire<S, Key> =>
  Schema.optionalWith(schema, { default: value }).pipe(Schema.fromKey(key)) as unknown as DefaultWire<S, Key>

/** What `Schema.Class<Self>(identifier)(fields)` returns, spelled out so that JSR need not infer it. */
export type ClassBase<Self, Fields extends Schema.Struct.Fields> = Schema.Class<
  Self,
  Fields,
  Schema.Struct.Encoded<Fields>,
  Schema.Struct.Context<Fields>,
  Schema.Struct.Constructor<Fields>,
  // deno-lint-ignore ban-types
  {},
  // deno-lint-ignore ban-types
  {}
>

/** What `Schema.TaggedError<Self>()(tag, fields)` returns. */
export type ErrorBase<Self, Tag extends string, Fields extends Schema.Struct.Fields> = Schema.TaggedErrorClass<
  Self,
  Tag,
  { readonly _tag: Schema.tag<Tag> } & Fields
>

/** What `Schema.TaggedClass<Self>()(tag, fields)` returns. */
export type TaggedClassBase<Self, Tag extends string, Fields extends Schema.Struct.Fields> = Schema.TaggedClass<
  Self,
  Tag,
  { readonly _tag: Schema.tag<Tag> } & Fields
>

/** `JSON.stringify` of at most `max` characters of `text`, saying how long it was when cut. */
export const quote = (text: string, max = 80): string =>
  text.length <= max ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, max))}… (${text.length} chars)`

/** No fields: what an empty `TaggedClass` declares. */
// deno-lint-ignore ban-types
export type NoFields = {}
