/**
 * The safetensors layout, read and written from TypeScript so tests can build
 * artifacts with known values and check what the workload wrote: an 8-byte
 * little-endian header length, a JSON header `{name: {dtype, shape,
 * data_offsets: [begin, end]}}` (offsets from the end of the header, optional
 * `__metadata__` of strings), then the little-endian tensor bytes.
 */

export type Dtype = "F32" | "F64" | "I64"

export interface Tensor {
  readonly dtype: Dtype
  readonly shape: ReadonlyArray<number>
  /** Raw little-endian bytes. */
  readonly data: Uint8Array
}

export interface Safetensors {
  readonly tensors: ReadonlyMap<string, Tensor>
  readonly metadata: Readonly<Record<string, string>>
}

const DTYPE_SIZES: Record<Dtype, number> = { F32: 4, F64: 8, I64: 8 }

const elements = (shape: ReadonlyArray<number>): number => shape.reduce((product, size) => product * size, 1)

const checkTensor = (name: string, tensor: Tensor): void => {
  if (!(tensor.dtype in DTYPE_SIZES)) throw new Error(`tensor ${name}: unsupported dtype ${tensor.dtype}`)
  if (!tensor.shape.every((size) => Number.isSafeInteger(size) && size >= 0)) {
    throw new Error(`tensor ${name}: invalid shape ${JSON.stringify(tensor.shape)}`)
  }
  const expected = elements(tensor.shape) * DTYPE_SIZES[tensor.dtype]
  if (tensor.data.byteLength !== expected) {
    throw new Error(
      `tensor ${name}: ${tensor.dtype} ${
        JSON.stringify(tensor.shape)
      } needs ${expected} bytes, has ${tensor.data.byteLength}`,
    )
  }
}

/** Tensors in name order, the header padded with spaces so the data starts 8-byte aligned (as the format asks). */
export const encode = (
  tensors: ReadonlyMap<string, Tensor>,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array => {
  const names = [...tensors.keys()].sort()
  const header: Record<string, unknown> = Object.keys(metadata).length > 0 ? { __metadata__: metadata } : {}
  let offset = 0
  for (const name of names) {
    const tensor = tensors.get(name)!
    checkTensor(name, tensor)
    header[name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.data.byteLength] }
    offset += tensor.data.byteLength
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  const headerLength = json.byteLength + (-json.byteLength & 7)
  const out = new Uint8Array(8 + headerLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true)
  out.fill(0x20, 8, 8 + headerLength)
  out.set(json, 8)
  let position = 8 + headerLength
  for (const name of names) {
    const { data } = tensors.get(name)!
    out.set(data, position)
    position += data.byteLength
  }
  return out
}

export const decode = (bytes: Uint8Array): Safetensors => {
  if (bytes.byteLength < 8) throw new Error(`${bytes.byteLength} bytes is shorter than the 8-byte header length`)
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true)
  if (headerLength > BigInt(bytes.byteLength - 8)) {
    throw new Error(`header length ${headerLength} exceeds the file (${bytes.byteLength} bytes)`)
  }
  const dataStart = 8 + Number(headerLength)
  const header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart)))
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error("header is not a JSON object")
  }
  const { __metadata__: metadata = {}, ...entries } = header as Record<string, unknown>
  const dataLength = bytes.byteLength - dataStart
  const tensors = new Map<string, Tensor>()
  for (const [name, entry] of Object.entries(entries)) {
    const { dtype, shape, data_offsets: offsets } = entry as {
      dtype: Dtype
      shape: Array<number>
      data_offsets: unknown
    }
    const [begin, end]: Array<unknown> = Array.isArray(offsets) ? offsets : []
    if (
      !(typeof begin === "number" && typeof end === "number" && Number.isSafeInteger(begin) &&
        Number.isSafeInteger(end) && 0 <= begin && begin <= end && end <= dataLength)
    ) {
      throw new Error(`tensor ${name}: offsets ${begin}..${end} fall outside ${dataLength} data bytes`)
    }
    const tensor = { dtype, shape, data: bytes.slice(dataStart + begin, dataStart + end) }
    checkTensor(name, tensor)
    tensors.set(name, tensor)
  }
  return { tensors, metadata: metadata as Record<string, string> }
}

/** An F32 tensor; the values are rounded to f32. */
export const f32 = (shape: ReadonlyArray<number>, values: ArrayLike<number>): Tensor => {
  if (values.length !== elements(shape)) {
    throw new Error(`shape ${JSON.stringify(shape)} holds ${elements(shape)} values, got ${values.length}`)
  }
  const data = new Uint8Array(values.length * 4)
  const view = new DataView(data.buffer)
  for (let index = 0; index < values.length; index++) view.setFloat32(index * 4, values[index], true)
  return { dtype: "F32", shape, data }
}

export const f32Values = (tensor: Tensor): Float32Array => {
  if (tensor.dtype !== "F32") throw new Error(`expected an F32 tensor, got ${tensor.dtype}`)
  const view = new DataView(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength)
  return Float32Array.from({ length: tensor.data.byteLength / 4 }, (_, index) => view.getFloat32(index * 4, true))
}

/** The F32 tensors `names` (every tensor, in name order, by default) flattened and concatenated in that order. */
export const flatF32 = (
  artifact: Safetensors,
  names: ReadonlyArray<string> = [...artifact.tensors.keys()].sort(),
): Float32Array => {
  const parts = names.map((name) => {
    const tensor = artifact.tensors.get(name)
    if (tensor === undefined) throw new Error(`the artifact has no tensor ${name}`)
    return f32Values(tensor)
  })
  const out = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}
