/**
 * The byte stream under a connection: a socket, or an in-memory pair in tests.
 *
 * @internal
 */
import type * as Net from "node:net"

/**
 * The byte stream to the worker: a socket, or an in-memory pair in tests.
 *
 * @internal
 */
export interface Transport {
  /** Queues the bytes; `false` once the stream wants no more until `onDrain`'s callback. */
  readonly write: (bytes: Uint8Array) => boolean
  /** Calls `callback` once the queued bytes have gone out (once). */
  readonly onDrain: (callback: () => void) => void
  readonly destroy: () => void
  /** Registers the handlers, once: `data` per chunk, `end` once when the stream ends or breaks. */
  readonly listen: (handlers: { readonly data: (chunk: Uint8Array) => void; readonly end: () => void }) => void
}

/** @internal */
export const fromSocket = (socket: Net.Socket): Transport => ({
  write: (bytes) => socket.write(bytes),
  onDrain: (callback) => void socket.once("drain", callback),
  destroy: () => socket.destroy(),
  listen: ({ data, end }) => {
    let ended = false
    const once = () => {
      if (ended) return
      ended = true
      end()
    }
    socket.on("data", data)
    socket.on("end", once)
    socket.on("error", once)
    socket.on("close", once)
  },
})
