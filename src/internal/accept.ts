/**
 * The listening side: the client listens on 127.0.0.1, port 0, and accepts
 * exactly one connection (the worker's); the listener closes right after.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import { WorkerConnectError } from "../WorkerError.ts"

/** @internal */
export interface Listener {
  readonly port: number
  /** The first connection, with TCP_NODELAY set; it is destroyed when the scope closes. */
  readonly accepted: Effect.Effect<Net.Socket>
}

const listenError = (cause: unknown) =>
  new WorkerConnectError({
    reason: "Listen",
    timeoutMillis: 0,
    detail: cause instanceof Error ? cause.message : String(cause),
    pid: null,
    exitCode: null,
    signal: null,
    stderrTail: "",
  })

/** @internal */
export const listen: Effect.Effect<Listener, WorkerConnectError, Scope.Scope> = Effect.gen(function* () {
  const accepted = yield* Deferred.make<Net.Socket>()
  let connection: Net.Socket | undefined
  const server = yield* Effect.acquireRelease(
    Effect.async<Net.Server, WorkerConnectError>((resume) => {
      const server = Net.createServer({ noDelay: true })
      server.once("error", (cause) => resume(Effect.fail(listenError(cause))))
      server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close()),
  )
  server.on("connection", (socket) => {
    if (connection !== undefined) {
      socket.destroy()
      return
    }
    connection = socket
    socket.setNoDelay(true)
    server.close()
    Deferred.unsafeDone(accepted, Effect.succeed(socket))
  })
  yield* Effect.addFinalizer(() => Effect.sync(() => connection?.destroy()))
  const address = server.address()
  if (address === null || typeof address === "string") {
    return yield* Effect.fail(listenError(`unexpected listener address ${JSON.stringify(address)}`))
  }
  return { port: address.port, accepted: Deferred.await(accepted) }
})
