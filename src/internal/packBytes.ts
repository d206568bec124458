/**
 * Bytes of `values.f32le` <-> Float32Array, copying at most once.
 *
 * @internal
 */

/** Whether this host stores a float32 little-endian (every common one does). */
export const LITTLE_ENDIAN_HOST = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

/** Reverses each 4-byte group in place: little-endian float32 <-> big-endian. */
export const byteswap32 = (bytes: Uint8Array): void => {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const a = bytes[i], b = bytes[i + 1]
    bytes[i] = bytes[i + 3]
    bytes[i + 1] = bytes[i + 2]
    bytes[i + 2] = b
    bytes[i + 3] = a
  }
}

/**
 * The bytes as float32s: a view when they are 4-byte aligned and alone in
 * their ArrayBuffer, else one copy (a small Node Buffer may be a slice of a
 * shared pool: a view would let the pack's values alias other buffers).
 * Byteswapped in place on a big-endian host.
 */
export const toFloat32 = (bytes: Uint8Array): Float32Array => {
  const alone = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
  const own = alone && bytes.buffer instanceof ArrayBuffer ? bytes : bytes.slice()
  if (!LITTLE_ENDIAN_HOST) byteswap32(own)
  return new Float32Array(own.buffer, own.byteOffset, own.byteLength / 4)
}

/** The values as little-endian bytes: a view on a little-endian host, else one swapped copy. */
export const toLittleEndianBytes = (values: Float32Array): Uint8Array => {
  const view = new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  if (LITTLE_ENDIAN_HOST) return view
  const copy = view.slice()
  byteswap32(copy)
  return copy
}
