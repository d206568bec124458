/**
 * The baselines the client is measured against: a bare interpreter start, and
 * a minimal `node:net` client speaking the same frames to a worker launched
 * with the same command line and environment as the client's. No Effect on
 * the hot path, no schemas, no spans: only what any client must do.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes, randomUUID } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { affinity } from "./pin.ts"

/** How long a bare worker gets to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 2000

export interface WorkerLaunch {
  readonly python: string
  readonly factory: string
  readonly runtimeRoot: string
  readonly maxFrameBytes: number
  /**
   * Starts the worker as our client does: in a process group of its own
   * (`detached`: Deno then forks where it would otherwise spawn) and with a
   * connect token, whose frame is read before the first request. What those
   * two cost is then in the baseline, not in our figure.
   */
  readonly ourProcessSetup?: boolean
}

/** The worker's argv, as `PythonWorker.make` builds it (the config in a private file, `--config-file`). */
export const workerArgs = (launch: WorkerLaunch, port: number | string, configFile: string): Array<string> => [
  "-m",
  "burn_p2p_python_runtime.worker",
  "--factory",
  launch.factory,
  "--config-file",
  configFile,
  "--connect-host",
  "127.0.0.1",
  "--connect-port",
  String(port),
]

/** The worker's environment, as `PythonWorker.make` builds it (stdin stays a pipe: the orphan guard). */
export const workerEnv = (launch: WorkerLaunch): Record<string, string> => ({
  ...Deno.env.toObject(),
  PYTHONPATH: [launch.runtimeRoot, ...(Deno.env.get("PYTHONPATH") ? [Deno.env.get("PYTHONPATH")!] : [])].join(":"),
  PYTHONUNBUFFERED: "1",
  BURN_P2P_WORKER_MAX_FRAME_BYTES: String(launch.maxFrameBytes),
  BURN_P2P_WORKER_EXIT_ON_STDIN_EOF: "1",
})

const exitOf = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once("exit", () => resolve()))

/** SIGTERM, a grace, SIGKILL; resolves once the child is reaped. */
const stop = async (child: ChildProcess): Promise<void> => {
  const exited = exitOf(child)
  child.kill("SIGTERM")
  let timer: ReturnType<typeof setTimeout> | undefined
  const graceOver = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), STOP_GRACE_MS)
  })
  if (await Promise.race([exited, graceOver]) === "late") child.kill("SIGKILL")
  clearTimeout(timer)
  await exited
}

/** Milliseconds from `spawn` to the exit of `python -c pass`. */
export const bareStart = (python: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(python, ["-c", "pass"], { stdio: "ignore" })
    child.once("error", reject)
    child.once("exit", (code) =>
      code === 0 ? resolve(performance.now() - started) : reject(new Error(`${python} -c pass exited with ${code}`)))
  })

/** Encodes a JSON text as one frame: 8-byte big-endian length, then the UTF-8 body, in one buffer. */
export const frame = (text: string): Buffer => {
  const length = Buffer.byteLength(text)
  const out = Buffer.allocUnsafe(8 + length)
  out.writeUInt32BE(Math.floor(length / 0x1_0000_0000), 0)
  out.writeUInt32BE(length >>> 0, 4)
  out.write(text, 8)
  return out
}

export interface BareWorker {
  readonly pid: number
  /** Writes one frame and resolves with the body of the next frame the worker sends. */
  readonly request: (frame: Uint8Array) => Promise<Buffer>
  /** Sends `method` with `params`, checks the answer's id and `ok`, returns `result`. */
  readonly call: (method: string, params: unknown) => Promise<unknown>
  readonly close: () => void
}

/** Listens, spawns the worker, accepts it, sets TCP_NODELAY. Not timed here; `spawnToHello` is. */
const launch = (options: WorkerLaunch, onChild: (child: ChildProcess) => void): Promise<BareWorker> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer({ noDelay: true })
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const port = (server.address() as Net.AddressInfo).port
      // As the client does: the config in a fresh private file, removed once the worker has connected.
      const configFile = join(tmpdir(), `burn-p2p-bench-config-${randomUUID()}.json`)
      writeFileSync(configFile, "{}", { mode: 0o600, flag: "wx" })
      const removeConfig = () => rmSync(configFile, { force: true })
      const token = options.ourProcessSetup === true ? randomBytes(32).toString("hex") : undefined
      const child = spawn(options.python, workerArgs(options, port, configFile), {
        env: token === undefined ? workerEnv(options) : { ...workerEnv(options), BURN_P2P_WORKER_CONNECT_TOKEN: token },
        stdio: ["pipe", "ignore", "pipe"],
        detached: token !== undefined,
      })
      onChild(child)
      // Kept for the error only: a worker the bench stops may say so on stderr, which is noise.
      let stderr = ""
      child.stderr!.setEncoding("utf8").on("data", (text: string) => {
        stderr = (stderr + text).slice(-4096)
      })
      child.once("error", (error) => {
        server.close()
        removeConfig()
        reject(error)
      })
      child.once("exit", (code, signal) => {
        server.close()
        removeConfig()
        reject(new Error(`bare worker exited (${code ?? signal}) before connecting; stderr:\n${stderr}`))
      })
      server.once("connection", (socket) => {
        server.close()
        removeConfig()
        socket.setNoDelay(true)
        if (token === undefined) return resolve(client(child.pid!, socket))
        // The token frame comes first, and alone: nothing is asked before it.
        let received = Buffer.alloc(0)
        const onToken = (chunk: Buffer) => {
          received = Buffer.concat([received, chunk])
          if (received.length < 8 || received.length < 8 + received.readUInt32BE(4)) return
          socket.off("data", onToken)
          if (!received.subarray(8).toString("utf8").startsWith(`{"connect_token":"${token}"`)) {
            socket.destroy()
            return reject(new Error("the bare worker's first frame was not its connect token"))
          }
          resolve(client(child.pid!, socket))
        }
        socket.on("data", onToken)
      })
    })
  })

const client = (pid: number, socket: Net.Socket): BareWorker => {
  let waiting: ((body: Buffer) => void) | undefined
  let failed: ((error: Error) => void) | undefined
  let chunks: Array<Buffer> = []
  let buffered = 0
  let nextId = 1
  socket.on("data", (chunk: Buffer) => {
    chunks.push(chunk)
    buffered += chunk.length
    while (buffered >= 8) {
      const head = chunks[0].length >= 8 ? chunks[0] : Buffer.concat(chunks)
      const length = head.readUInt32BE(0) * 0x1_0000_0000 + head.readUInt32BE(4)
      if (buffered < 8 + length) return
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, buffered)
      const rest = all.subarray(8 + length)
      chunks = rest.length > 0 ? [rest] : []
      buffered = rest.length
      const resume = waiting
      waiting = undefined
      resume?.(all.subarray(8, 8 + length))
    }
  })
  const broken = (error: Error) => failed?.(error)
  socket.on("error", broken)
  socket.on("close", () => broken(new Error("the bare worker closed the connection")))
  const request = (bytes: Uint8Array) =>
    new Promise<Buffer>((resolve, reject) => {
      waiting = resolve
      failed = reject
      socket.write(bytes)
    })
  return {
    pid,
    request,
    call: async (method, params) => {
      const id = nextId++
      const body = await request(frame(JSON.stringify({ id, method, params })))
      const answer = JSON.parse(body.toString("utf8"))
      if (answer.id !== id || answer.ok !== true) throw new Error(`bare ${method}#${id}: ${body.toString("utf8")}`)
      return answer.result
    },
    close: () => socket.destroy(),
  }
}

/** A bare worker owned by the scope: on release it is stopped and reaped (also on interruption). */
export const bareWorker = (options: WorkerLaunch): Effect.Effect<BareWorker, Error, Scope.Scope> => {
  let child: ChildProcess | undefined
  return Effect.acquireRelease(
    Effect.tryPromise({
      try: () => launch(options, (spawned) => (child = spawned)),
      catch: (error) => error as Error,
    }).pipe(Effect.onInterrupt(() => Effect.promise(() => child === undefined ? Promise.resolve() : stop(child)))),
    (worker) =>
      Effect.promise(() => {
        worker.close()
        return stop(child!)
      }),
  )
}

/** This process's CPU time so far, every thread's, in milliseconds. */
export const cpuMillis = (): number => {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

/**
 * Milliseconds from spawn to the `hello` answer, for a bare worker, the
 * client's CPU time in them, and the worker's CPU affinity read back
 * afterwards; it is stopped afterwards (neither is timed).
 */
export const bareSpawnToHello = (
  options: WorkerLaunch,
): Effect.Effect<{ readonly elapsed: number; readonly cpu: number; readonly affinity: string }, Error> =>
  Effect.scoped(Effect.gen(function* () {
    const started = performance.now()
    const cpuBefore = cpuMillis()
    const worker = yield* bareWorker(options)
    yield* Effect.tryPromise({ try: () => worker.call("hello", null), catch: (error) => error as Error })
    const elapsed = performance.now() - started
    return { elapsed, cpu: cpuMillis() - cpuBefore, affinity: affinity(worker.pid) }
  }))
