/**
 * A schema's common case compiled to plain functions: the same checks and
 * the same output as `effect/Schema`'s decoder (or encoder), without its
 * `Either` per node and the garbage that makes (about 7 KB and 4 µs for a
 * `Hello`). It only ever says yes when the schema says yes: anything it does
 * not know, or any doubt (a union two members accept), is `FAIL`, and the
 * caller runs the schema itself, which then also words the error. So a
 * complaint is always the schema's, and the schema stays the one source of truth.
 *
 * It follows `ParseResult`'s default options: excess properties ignored
 * (or, compiled with `onExcessProperty: "error"`, any own key a struct does
 * not declare is `FAIL`), missing keys read as `undefined`, the first error
 * ends the walk.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as AST from "effect/SchemaAST"

/** @internal */
export const FAIL: unique symbol = Symbol.for("burn-p2p/fastCodec/FAIL")

/** The value decoded (or encoded), or `FAIL`: rejected, or not a case this knows. */
export type Parser = (input: unknown) => unknown

const OPTIONS: AST.ParseOptions = {}
const hasOwn = (object: object, key: PropertyKey) => Object.prototype.hasOwnProperty.call(object, key)

/** Thrown while compiling a node this does not handle: the whole schema then goes to the schema. */
class Unsupported extends Error {}

/**
 * Thrown for one input this cannot judge: a union two members take, a
 * transformation that answers with an `Effect`, a union member that throws
 * (the schema may never have called it). `FAIL` means rejected; a doubt
 * sends that input to the schema, also from inside a union, which must not
 * read it as one member's rejection. One instance: no stack to capture.
 */
class Doubt extends Error {}
const DOUBT = new Doubt()

const never: Parser = () => FAIL
const identity: Parser = (input) => input
const when = (test: (input: unknown) => boolean): Parser => (input) => test(input) ? input : FAIL

/** What `ParseResult` returns synchronously, as a value or `FAIL`; an `Effect` is the schema's to run. */
const fromResult = (result: unknown): unknown => {
  if (!Either.isEither(result)) throw DOUBT
  return Either.isRight(result) ? result.right : FAIL
}

const dropRightRefinement = (ast: AST.AST): AST.AST => AST.isRefinement(ast) ? dropRightRefinement(ast.from) : ast

/** One schema's compilation; a memo per direction (an encoder checks refinements by decoding their type). */
class Compiler {
  /** `onExcessProperty: "error"`: a key a struct neither declares nor indexes sends the input to the schema. */
  constructor(private readonly excessIsError: boolean) {}

  private readonly memos = { decode: new Map<AST.AST, Parser>(), encode: new Map<AST.AST, Parser>() }

  compile(ast: AST.AST, isDecoding: boolean): Parser {
    const memo = isDecoding ? this.memos.decode : this.memos.encode
    const found = memo.get(ast)
    if (found !== undefined) return found
    // Recursive schemas (`Suspend`) meet themselves: a forwarder until compiled.
    const slot: { parser?: Parser } = {}
    memo.set(ast, (input) => slot.parser!(input))
    if (
      Option.isSome(AST.getParseOptionsAnnotation(ast)) ||
      (isDecoding && Option.isSome(AST.getDecodingFallbackAnnotation(ast)))
    ) throw new Unsupported()
    slot.parser = this.node(ast, isDecoding)
    memo.set(ast, slot.parser)
    return slot.parser
  }

  private node(ast: AST.AST, isDecoding: boolean): Parser {
    switch (ast._tag) {
      case "Refinement": {
        if (isDecoding) {
          const from = this.compile(ast.from, true)
          return (input) => {
            const value = from(input)
            return value === FAIL || Option.isSome(ast.filter(value, OPTIONS, ast)) ? FAIL : value
          }
        }
        const check = this.compile(AST.typeAST(ast), true)
        const to = this.compile(dropRightRefinement(ast.from), false)
        return (input) => {
          const value = check(input)
          return value === FAIL ? FAIL : to(value)
        }
      }
      case "Transformation":
        return this.transformation(ast, isDecoding)
      case "Declaration": {
        const parse = isDecoding ? ast.decodeUnknown(...ast.typeParameters) : ast.encodeUnknown(...ast.typeParameters)
        return (input) => fromResult(parse(input, OPTIONS, ast))
      }
      case "Literal": {
        const literal = ast.literal
        return (input) => input === literal ? input : FAIL
      }
      case "UniqueSymbol": {
        const symbol = ast.symbol
        return (input) => input === symbol ? input : FAIL
      }
      case "UndefinedKeyword":
        return when((input) => input === undefined)
      case "NeverKeyword":
        return never
      case "UnknownKeyword":
      case "AnyKeyword":
      case "VoidKeyword":
        return identity
      case "StringKeyword":
        return when((input) => typeof input === "string")
      case "NumberKeyword":
        return when((input) => typeof input === "number")
      case "BooleanKeyword":
        return when((input) => typeof input === "boolean")
      case "BigIntKeyword":
        return when((input) => typeof input === "bigint")
      case "SymbolKeyword":
        return when((input) => typeof input === "symbol")
      case "ObjectKeyword":
        return when((input) => (typeof input === "object" && input !== null) || typeof input === "function")
      case "Enums": {
        const values = ast.enums.map(([, value]) => value)
        return when((input) => values.some((value) => value === input))
      }
      case "TupleType":
        return this.tuple(ast, isDecoding)
      case "TypeLiteral":
        return this.typeLiteral(ast, isDecoding)
      case "Union":
        return this.union(ast, isDecoding)
      case "Suspend": {
        // Compiled on first use, as `ParseResult` does: `typeAST` makes a new
        // `Suspend` on every call, so a memo alone would never see it again.
        let inner: Parser | undefined
        return (input) => (inner ??= this.compile(ast.f(), isDecoding))(input)
      }
      case "TemplateLiteral":
        throw new Unsupported()
    }
  }

  private transformation(ast: AST.Transformation, isDecoding: boolean): Parser {
    const from = this.compile(isDecoding ? ast.from : ast.to, isDecoding)
    const to = this.compile(isDecoding ? ast.to : ast.from, isDecoding)
    const kind = ast.transformation
    let transform: (value: unknown, input: unknown) => unknown
    switch (kind._tag) {
      case "FinalTransformation": {
        const f = isDecoding ? kind.decode : kind.encode
        transform = (value, input) => fromResult(f(value, OPTIONS, ast, input))
        break
      }
      case "ComposeTransformation":
        transform = (value) => value
        break
      case "TypeLiteralTransformation": {
        const steps = kind.propertySignatureTransformations.map((step) =>
          isDecoding
            ? { from: step.from, to: step.to, f: step.decode }
            : { from: step.to, to: step.from, f: step.encode }
        )
        const source = isDecoding ? ast.from : ast.to
        transform = renamesAtOnce(steps, source) ?? ((value) => {
          // As `ParseResult` does (each key deleted, then set: it moves last), on a copy.
          if (typeof value !== "object" || value === null) return FAIL
          const out: Record<PropertyKey, unknown> = { ...value }
          for (const step of steps) {
            const moved = step.f(hasOwn(out, step.from) ? Option.some(out[step.from]) : Option.none())
            delete out[step.from]
            if (Option.isSome(moved)) out[step.to] = moved.value
          }
          return out
        })
        break
      }
    }
    return (input) => {
      const value = from(input)
      if (value === FAIL) return FAIL
      const moved = transform(value, input)
      return moved === FAIL ? FAIL : to(moved)
    }
  }

  private tuple(ast: AST.TupleType, isDecoding: boolean): Parser {
    const elements = ast.elements.map((element) => this.compile(element.type, isDecoding))
    const [head, ...tail] = ast.rest.map((rest) => this.compile(rest.type, isDecoding))
    const requiredLength = ast.elements.filter((element) => !element.isOptional).length + Math.max(0, tail.length)
    const hasRest = head !== undefined
    return (input) => {
      if (!Array.isArray(input)) return FAIL
      const length = input.length
      if (length < requiredLength || (!hasRest && length > elements.length)) return FAIL
      const out: Array<unknown> = []
      let i = 0
      for (; i < elements.length; i++) {
        if (length < i + 1) continue
        const value = elements[i](input[i])
        if (value === FAIL) return FAIL
        out.push(value)
      }
      if (hasRest) {
        for (; i < length - tail.length; i++) {
          const value = head(input[i])
          if (value === FAIL) return FAIL
          out.push(value)
        }
        for (let j = 0; j < tail.length; j++) {
          if (length < i + j + 1) continue
          const value = tail[j](input[i + j])
          if (value === FAIL) return FAIL
          out.push(value)
        }
      }
      return out
    }
  }

  private typeLiteral(ast: AST.TypeLiteral, isDecoding: boolean): Parser {
    if (ast.propertySignatures.length === 0 && ast.indexSignatures.length === 0) {
      return when((input) => input !== null && input !== undefined)
    }
    const properties = ast.propertySignatures.map((signature) => ({
      name: signature.name,
      optional: signature.isOptional,
      parse: this.compile(signature.type, isDecoding),
    }))
    const expected: Record<PropertyKey, null> = {}
    for (const property of properties) expected[property.name] = null
    const indexes = ast.indexSignatures.map((signature) => ({
      keys: keysOf(signature.parameter),
      key: this.compile(signature.parameter, isDecoding),
      parse: this.compile(signature.type, isDecoding),
    }))
    const excessIsError = this.excessIsError
    return (input) => {
      if (typeof input !== "object" || input === null || Array.isArray(input)) return FAIL
      const record = input as Record<PropertyKey, unknown>
      if (excessIsError) {
        // As `ParseResult` lists them: every own key, symbols and non-enumerable ones included.
        for (const key of Reflect.ownKeys(record)) {
          if (!hasOwn(expected, key) && !indexes.some((index) => index.key(key) !== FAIL)) return FAIL
        }
      }
      const out: Record<PropertyKey, unknown> = {}
      for (const property of properties) {
        if (property.optional && !hasOwn(record, property.name)) continue
        const value = property.parse(record[property.name])
        if (value === FAIL) return FAIL
        out[property.name] = value
      }
      for (const index of indexes) {
        for (const key of index.keys(record)) {
          if (index.key(key) === FAIL) continue
          const value = index.parse(record[key])
          if (value === FAIL) return FAIL
          if (!hasOwn(expected, key)) out[key] = value
        }
      }
      return out
    }
  }

  /**
   * A member's result, when exactly one member takes the input: the schema,
   * which tries its candidates in its own order, would reach the same one.
   * Two takers, or a member in doubt, leave the input to the schema (a doubt, not a rejection).
   */
  private union(ast: AST.Union, isDecoding: boolean): Parser {
    const members = ast.types.map((member) => this.compile(member, isDecoding))
    return (input) => {
      let found: unknown = FAIL
      for (const member of members) {
        let value: unknown
        try {
          value = member(input)
        } catch (error) {
          if (error instanceof Unsupported) throw error
          throw DOUBT
        }
        if (value === FAIL) continue
        if (found !== FAIL) throw DOUBT
        found = value
      }
      return found
    }
  }
}

interface Rename {
  readonly from: PropertyKey
  readonly to: PropertyKey
  readonly f: (value: Option.Option<unknown>) => Option.Option<unknown>
}

/**
 * The renames in one pass, building the object `ParseResult`'s deletes
 * would leave (the other keys in order, then each renamed key in step order)
 * without `delete`, which turns an object into a slow dictionary. Only where
 * that is the same object: the value comes from a struct with no index
 * signature (so it holds declared keys only), each step reads a declared key
 * of its own and writes a key no other step writes and no other declared key
 * is. Else `undefined`.
 */
const renamesAtOnce = (
  steps: ReadonlyArray<Rename>,
  source: AST.AST,
): ((value: unknown) => unknown) | undefined => {
  if (source._tag !== "TypeLiteral" || source.indexSignatures.length > 0) return undefined
  const declared = source.propertySignatures.map((signature) => signature.name)
  const read = new Set(steps.map((step) => step.from))
  const written = new Set(steps.map((step) => step.to))
  const safe = read.size === steps.length && written.size === steps.length &&
    steps.every((step) => declared.includes(step.from) && (step.to === step.from || !declared.includes(step.to)))
  if (!safe) return undefined
  const kept = declared.filter((name) => !read.has(name))
  return (value) => {
    if (typeof value !== "object" || value === null) return FAIL
    const record = value as Record<PropertyKey, unknown>
    const out: Record<PropertyKey, unknown> = {}
    for (const key of kept) if (hasOwn(record, key)) out[key] = record[key]
    for (const step of steps) {
      const moved = step.f(hasOwn(record, step.from) ? Option.some(record[step.from]) : Option.none())
      if (Option.isSome(moved)) out[step.to] = moved.value
    }
    return out
  }
}

/** The keys an index signature reads, as `ParseResult` takes them. */
const keysOf = (parameter: AST.Parameter): (record: object) => ReadonlyArray<PropertyKey> => {
  switch (parameter._tag) {
    case "StringKeyword":
    case "TemplateLiteral":
      return Object.keys
    case "SymbolKeyword":
      return Object.getOwnPropertySymbols
    case "Refinement":
      return keysOf(parameter.from as AST.Parameter)
  }
}

/**
 * The fast path of `ast`'s decoder (`isDecoding`) or encoder. A node it does
 * not know, met while compiling or later (inside a `Suspend`), turns it off
 * for good: every input is then `FAIL`. An input it cannot judge is `FAIL`.
 *
 * @internal
 */
export const compile = (
  ast: AST.AST,
  isDecoding: boolean,
  options?: { readonly onExcessProperty?: "ignore" | "error" },
): Parser => {
  let root: Parser
  try {
    root = new Compiler(options?.onExcessProperty === "error").compile(ast, isDecoding)
  } catch (error) {
    if (error instanceof Unsupported) return never
    throw error
  }
  return (input) => {
    try {
      return root(input)
    } catch (error) {
      // A doubt, or a transformation that threw: this input is the schema's, which does what it does with it.
      if (error instanceof Unsupported) root = never
      return FAIL
    }
  }
}

/**
 * `schema` (a decoder or encoder of `ast`) with its compiled fast path
 * first: the schema itself for anything else, and for every complaint.
 *
 * @internal
 */
export const withFastPath = <A>(
  ast: AST.AST,
  isDecoding: boolean,
  schema: (input: unknown) => Either.Either<A, ParseResult.ParseError>,
  options?: { readonly onExcessProperty?: "ignore" | "error" },
): (input: unknown) => Either.Either<A, ParseResult.ParseError> => {
  const fast = compile(ast, isDecoding, options)
  return (input) => {
    const value = fast(input)
    return value === FAIL ? schema(input) : Either.right(value as A)
  }
}
