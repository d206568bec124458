/**
 * The listening side: the client listens on 127.0.0.1, port 0, and accepts
 * exactly one connection, the worker's. Any local process can connect to a
 * loopback port, so a connection must prove it is the worker:
 *
 * - `"token"` (our worker): the launcher passes a per-start secret through
 *   the environment (never argv); the worker's first frame presents it, with
 *   its pid and process group, before the client sends anything. A peer whose
 *   first bytes differ is dropped at the first wrong byte and learns nothing.
 *   Needs no `/proc`, and costs nothing per start.
 * - `"processGroup"` (workers that know no secret, such as the reference's):
 *   the peer's socket must be held by a process of the worker's group, found
 *   through `/proc` (Linux); where `/proc` cannot tell, the first wins.
 *
 * The listener closes as soon as the worker is connected.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import { timingSafeEqual } from "node:crypto"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import * as Net from "node:net"
import { setImmediate } from "node:timers"
import { parseStat } from "./exitStatus.ts"
import { HEADER_BYTES } from "./frame.ts"

/** @internal */
export type Verification =
  | { readonly _tag: "Token"; readonly token: string }
  | { readonly _tag: "ProcessGroup" }

/**
 * Why the worker could not be accepted: a connection proved to be the
 * worker but runs outside its process group (a launcher moved it into its
 * own session), so the client could neither supervise nor stop it.
 *
 * @internal
 */
export interface Outsider {
  readonly pid: number | null
  readonly pgid: number | null
}

/** @internal */
export interface Listener {
  readonly port: number
  /**
   * The first verified connection, with TCP_NODELAY set; destroyed when the
   * scope closes. Fails with the outsider when the worker connected from
   * outside the group `pid` leads.
   */
  readonly accept: (pid: number) => Effect.Effect<Net.Socket, Outsider>
  /** An outsider seen so far, if any: explains a launcher that exited with code 0. */
  readonly outsider: () => Outsider | undefined
}

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
    (pid) => pid !== pgid && parseStat(readOr(() => readFileSync(`/proc/${pid}/stat`, "utf8"), "")).pgid === pgid,
  )
  return [pgid, ...others]
}

/** Under Deno without `--allow-net` for 127.0.0.1, the error a listen would throw; elsewhere `undefined`. */
const netDenied = (): Error | undefined => {
  const deno = (globalThis as { Deno?: { permissions?: { querySync?: (d: object) => { state: string } } } }).Deno
  const state = deno?.permissions?.querySync?.({ name: "net", host: "127.0.0.1" }).state
  return state === undefined || state === "granted"
    ? undefined
    : new Error('Requires net access to "127.0.0.1", run again with the --allow-net flag')
}

/** `:PORT` as /proc/net/tcp spells it. */
const hexPort = (n: number) => `:${n.toString(16).toUpperCase().padStart(4, "0")}`

/**
 * For a batch of accepted loopback sockets, whether each peer is a process of
 * the group `pgid` leads: its socket's inode, from /proc/net/tcp, among the
 * group's open files. `undefined` where /proc cannot tell (not Linux, or the
 * group's files are not readable to this process). The table and the group's
 * files are read once per batch, so a flood of connections costs one read
 * each, not one scan of /proc each.
 */
const peersInGroup = (sockets: ReadonlyArray<Net.Socket>, pgid: number): Array<boolean | undefined> => {
  const table = readOr(() => readFileSync("/proc/net/tcp", "utf8"), undefined)
  if (table === undefined) return sockets.map(() => undefined)
  const inodeByPorts = new Map<string, string>()
  for (const line of table.split("\n")) {
    const fields = line.trim().split(/\s+/)
    if (fields.length > 9) inodeByPorts.set(`${fields[1]?.slice(-5)} ${fields[2]?.slice(-5)}`, fields[9])
  }
  let groupSockets: Set<string> | undefined | null = null
  const heldByGroup = (): Set<string> | undefined => {
    if (groupSockets !== null) return groupSockets
    let members: Array<number>
    try {
      readdirSync(`/proc/${pgid}/fd`)
      members = groupMembers(pgid)
    } catch (error) {
      // Gone (a launcher that exited): only the rest of its group can hold the socket. Unreadable
      // (narrow permissions): cannot be judged.
      if ((error as { code?: unknown }).code !== "ENOENT") return (groupSockets = undefined)
      members = groupMembers(pgid).slice(1)
    }
    const held = new Set<string>()
    for (const pid of members) {
      for (const fd of readOr(() => readdirSync(`/proc/${pid}/fd`), [])) {
        const link = readOr(() => readlinkSync(`/proc/${pid}/fd/${fd}`), "")
        if (link.startsWith("socket:[")) held.add(link.slice(8, -1))
      }
    }
    return (groupSockets = held)
  }
  return sockets.map((socket) => {
    // A peer that has already gone (reset, closed) is no worker.
    if (socket.destroyed || socket.remotePort === undefined || socket.localPort === undefined) return false
    const inode = inodeByPorts.get(`${hexPort(socket.remotePort)} ${hexPort(socket.localPort)}`)
    if (inode === undefined) return false
    const held = heldByGroup()
    // The worker itself connects in the usual case; a wrapper may leave it to a descendant.
    return held === undefined ? undefined : held.has(inode)
  })
}

/** The longest token frame we read: anything longer is not our worker. */
const MAX_TOKEN_FRAME = 512
const TOKEN_PREFIX = Buffer.from(`{"connect_token":"`)

/**
 * Reads the token frame: `{"connect_token":"<hex>","pid":N,"pgid":N}`.
 * Calls `verdict` once: the frame's pid and pgid when the token matches,
 * `undefined` as soon as the bytes cannot be the worker's.
 */
const readToken = (
  socket: Net.Socket,
  token: Buffer,
  verdict: (proof: { pid: number | null; pgid: number | null } | undefined) => void,
) => {
  let received = Buffer.alloc(0)
  let done = false
  const finish = (proof: { pid: number | null; pgid: number | null } | undefined) => {
    if (done) return
    done = true
    socket.removeListener("data", onData)
    verdict(proof)
  }
  const onData = (chunk: Buffer) => {
    received = Buffer.concat([received, chunk])
    if (received.length > HEADER_BYTES + MAX_TOKEN_FRAME) return finish(undefined)
    if (received.length < HEADER_BYTES) return
    const length = received.readUInt32BE(0) * 0x1_0000_0000 + received.readUInt32BE(4)
    if (length > MAX_TOKEN_FRAME || length < TOKEN_PREFIX.length + token.length + 2) return finish(undefined)
    // Dropped at the first byte that differs from what the worker sends.
    const body = received.subarray(HEADER_BYTES)
    const prefix = Math.min(body.length, TOKEN_PREFIX.length)
    if (!body.subarray(0, prefix).equals(TOKEN_PREFIX.subarray(0, prefix))) return finish(undefined)
    if (received.length < HEADER_BYTES + length) return
    // The worker sends nothing else until it is asked: more bytes are not the worker.
    if (received.length > HEADER_BYTES + length) return finish(undefined)
    const presented = body.subarray(TOKEN_PREFIX.length, TOKEN_PREFIX.length + token.length)
    if (presented.length !== token.length || !timingSafeEqual(presented, token)) return finish(undefined)
    let parsed: unknown
    try {
      parsed = JSON.parse(body.toString("utf8"))
    } catch {
      return finish(undefined)
    }
    const record = parsed as { pid?: unknown; pgid?: unknown }
    const int = (value: unknown) => typeof value === "number" && Number.isInteger(value) ? value : null
    finish({ pid: int(record.pid), pgid: int(record.pgid) })
  }
  socket.on("data", onData)
}

/** @internal */
export const listen = (
  verification: Verification,
): Effect.Effect<Listener, { readonly cause: unknown }, Scope.Scope> =>
  Effect.gen(function* () {
    const accepted = yield* Deferred.make<Net.Socket, Outsider>()
    const open = new Set<Net.Socket>()
    const waiting: Array<Net.Socket> = []
    let expected: number | undefined
    let outsider: Outsider | undefined
    let connection: Net.Socket | undefined
    const token = verification._tag === "Token" ? Buffer.from(verification.token) : undefined

    const take = (socket: Net.Socket) => {
      if (connection !== undefined || socket.destroyed) return socket.destroy()
      connection = socket
      open.delete(socket)
      socket.setNoDelay(true)
      server.close()
      for (const other of open) other.destroy()
      open.clear()
      Deferred.unsafeDone(accepted, Effect.succeed(socket))
    }

    const proven: Array<{ socket: Net.Socket; proof: Outsider }> = []
    const judgeProof = (socket: Net.Socket, proof: Outsider) => {
      if (proof.pgid !== null && proof.pgid !== expected) {
        outsider = proof
        socket.destroy()
        return Deferred.unsafeDone(accepted, Effect.fail(proof))
      }
      take(socket)
    }

    // Judged in batches, once per turn of the event loop: see `peersInGroup`.
    let toJudge: Array<Net.Socket> = []
    const judgeBatch = () => {
      const batch = toJudge
      toJudge = []
      const verdicts = peersInGroup(batch, expected!)
      batch.forEach((socket, i) => {
        if (connection !== undefined) return socket.destroy()
        if (verdicts[i] === false) {
          // Only a live peer proven outside the group explains a launcher's exit; a probe that left does not.
          if (!socket.destroyed) outsider = { pid: null, pgid: null }
          return socket.destroy()
        }
        take(socket)
      })
    }
    const judgeByGroup = (socket: Net.Socket) => {
      if (connection !== undefined) return socket.destroy()
      toJudge.push(socket)
      if (toJudge.length === 1) setImmediate(judgeBatch)
    }

    // Deno refuses the listen from a later tick, as an uncaught error: ask first.
    const denied = netDenied()
    if (denied !== undefined) return yield* Effect.fail({ cause: denied })
    const server = yield* Effect.acquireRelease(
      Effect.async<Net.Server, { readonly cause: unknown }>((resume) => {
        let server: Net.Server
        try {
          server = Net.createServer({ noDelay: true })
          let listening = false
          // Kept for good: a later accept error (EMFILE) must not be uncaught.
          server.on("error", (cause) => {
            if (!listening) resume(Effect.fail({ cause }))
          })
          server.listen({ host: "127.0.0.1", port: 0 }, () => {
            listening = true
            resume(Effect.succeed(server))
          })
        } catch (cause) {
          // Deno without --allow-net throws here.
          return resume(Effect.fail({ cause }))
        }
        return Effect.sync(() => server.close())
      }),
      (server) => Effect.sync(() => server.close()),
    )
    server.on("connection", (socket) => {
      // Until the client takes it over, a reset must not become an uncaught error.
      socket.on("error", () => undefined)
      if (connection !== undefined) return socket.destroy()
      open.add(socket)
      socket.once("close", () => open.delete(socket))
      if (token !== undefined) {
        readToken(socket, token, (proof) => {
          if (proof === undefined) return socket.destroy()
          // Before `accept` knows the pid, the proof waits to be judged.
          if (expected === undefined) return proven.push({ socket, proof })
          judgeProof(socket, proof)
        })
      } else if (expected === undefined) {
        waiting.push(socket)
      } else {
        judgeByGroup(socket)
      }
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        connection?.destroy()
        for (const socket of open) socket.destroy()
      })
    )
    const address = server.address()
    if (address === null || typeof address === "string") {
      return yield* Effect.fail({ cause: new Error(`unexpected listener address ${JSON.stringify(address)}`) })
    }
    return {
      port: address.port,
      accept: (pid) =>
        Effect.suspend(() => {
          expected = pid
          for (const socket of waiting.splice(0)) judgeByGroup(socket)
          for (const { proof, socket } of proven.splice(0)) judgeProof(socket, proof)
          return Deferred.await(accepted)
        }),
      outsider: () => outsider,
    }
  })
