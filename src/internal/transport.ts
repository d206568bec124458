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
  readonly write: (frame: Uint8Array) => void
  readonly destroy: () => void
  /** Registers the handlers, once: `data` per chunk, `end` once when the stream ends or breaks. */
  readonly listen: (handlers: { readonly data: (chunk: Uint8Array) => void; readonly end: () => void }) => void
}

/** @internal */
export const fromSocket = (socket: Net.Socket): Transport => ({
  write: (frame) => void socket.write(frame),
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
