/**
 * The listening side: the client listens on 127.0.0.1, port 0, and accepts
 * exactly one connection: the worker's. Any local process can connect to a
 * loopback port, so on Linux a connection is accepted only when its socket
 * belongs to the worker's process group; others are closed. The listener
 * closes as soon as the worker is connected.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import * as Net from "node:net"
import { WorkerConnectError } from "../WorkerError.ts"

/** @internal */
export interface Listener {
  readonly port: number
  /**
   * The first connection from the process group that `pid` leads, with
   * TCP_NODELAY set; it is destroyed when the scope closes.
   */
  readonly accept: (pid: number) => Effect.Effect<Net.Socket>
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

const readOr = <A>(read: () => A, fallback: A): A => {
  try {
    return read()
  } catch {
    return fallback
  }
}

/** The pids of a process group: its leader first, then any other member. */
const groupMembers = (pgid: number): Array<number> => {
  const others = readOr(() => readdirSync("/proc"), []).filter((name) => /^\d+$/.test(name)).map(Number).filter(
    (pid) => {
      if (pid === pgid) return false
      const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, "utf8"), "")
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === pgid
    },
  )
  return [pgid, ...others]
}

/**
 * Whether the peer of an accepted loopback socket is a process of the group
 * `pgid` leads: its socket's inode, from /proc/net/tcp, among the group's
 * open files. `undefined` where /proc cannot tell (not Linux, or the group's
 * files are not readable to this process).
 */
const peerInGroup = (socket: Net.Socket, pgid: number): boolean | undefined => {
  const table = readOr(() => readFileSync("/proc/net/tcp", "utf8"), undefined)
  if (table === undefined) return undefined
  // A peer that has already gone (reset, closed) is no worker.
  if (socket.destroyed || socket.remotePort === undefined || socket.localPort === undefined) return false
  const port = (n: number) => `:${n.toString(16).toUpperCase().padStart(4, "0")}`
  const row = table.split("\n").map((line) => line.trim().split(/\s+/)).find((fields) =>
    fields[1]?.endsWith(port(socket.remotePort!)) && fields[2]?.endsWith(port(socket.localPort!))
  )
  if (row === undefined) return false
  const target = `socket:[${row[9]}]`
  const holds = (pid: number) =>
    readOr(() => readdirSync(`/proc/${pid}/fd`), []).some((fd) =>
      readOr(() => readlinkSync(`/proc/${pid}/fd/${fd}`), "") === target
    )
  // A leader whose open files this process may not read (narrow permissions) cannot be judged.
  if (readOr(() => readdirSync(`/proc/${pgid}/fd`), undefined) === undefined) return undefined
  // The worker itself connects in the usual case; a wrapper may leave it to a descendant.
  return holds(pgid) || groupMembers(pgid).slice(1).some(holds)
}

/** @internal */
export const listen: Effect.Effect<Listener, WorkerConnectError, Scope.Scope> = Effect.gen(function* () {
  const accepted = yield* Deferred.make<Net.Socket>()
  const waiting: Array<Net.Socket> = []
  let expected: number | undefined
  let connection: Net.Socket | undefined

  const consider = (socket: Net.Socket) => {
    if (connection !== undefined) return socket.destroy()
    if (peerInGroup(socket, expected!) === false) {
      // Not the worker: close it and keep listening.
      return socket.destroy()
    }
    connection = socket
    socket.setNoDelay(true)
    server.close()
    Deferred.unsafeDone(accepted, Effect.succeed(socket))
  }

  const server = yield* Effect.acquireRelease(
    Effect.async<Net.Server, WorkerConnectError>((resume) => {
      const server = Net.createServer({ noDelay: true })
      server.once("error", (cause) => resume(Effect.fail(listenError(cause))))
      server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed(server)))
      return Effect.sync(() => server.close())
    }),
    (server) => Effect.sync(() => server.close()),
  )
  server.on("connection", (socket) => {
    // Until the client takes it over, a reset must not become an uncaught error.
    socket.on("error", () => undefined)
    if (expected === undefined) waiting.push(socket)
    else consider(socket)
  })
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      connection?.destroy()
      for (const socket of waiting) socket.destroy()
    })
  )
  const address = server.address()
  if (address === null || typeof address === "string") {
    return yield* Effect.fail(listenError(`unexpected listener address ${JSON.stringify(address)}`))
  }
  return {
    port: address.port,
    accept: (pid) =>
      Effect.suspend(() => {
        expected = pid
        for (const socket of waiting.splice(0)) consider(socket)
        return Deferred.await(accepted)
      }),
  }
})
