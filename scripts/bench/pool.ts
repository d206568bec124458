/**
 * The "pool" section of `deno task bench`: what a `PythonWorkerPool` of 2
 * buys on CPU-bound work, and what its `withWorker` costs per call.
 *
 * - Throughput: `calls` CPU-bound `trainWindow` calls (the standard-library
 *   workload on `examples` generated examples per call: pure-Python SGD, tens
 *   of ms each) shared by `CALLERS` concurrent callers, through a pool of 2
 *   (`pool.withWorker((w, i) => w.trainWindow(models[i], ...))`) vs the same
 *   callers and calls on one worker. Blocks alternate ABBA; target >= 1.8x.
 * - Overhead: `pool.withWorker((w) => w.hello())` vs `worker.hello()` on a
 *   standalone worker, one caller, medians over ABBA blocks.
 *
 * Pinning: the bench's client runs on cpu0 and its children inherit that, so
 * every worker of this section is unpinned right after it starts
 * (`taskset -a -p -c 0-N PID`, read back) and the kernel spreads them over
 * all cores: one of the two pool workers then shares cpu0 with the client.
 *
 *     const section = yield* Effect.scoped(poolSection({ python, calls: 32, helloCalls: 2000 }))
 *     console.log(Table.render(section))
 */
import { spawnSync } from "node:child_process"
import os from "node:os"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { type BatchRef, PythonWorker, PythonWorkerPool } from "../../src/mod.ts"
import { affinity } from "./pin.ts"
import * as Table from "./table.ts"

export interface PoolSettings {
  readonly python: string
  /** trainWindow calls per block and configuration. */
  readonly calls: number
  /** hello calls per configuration for the overhead rows (split into ABBA blocks). */
  readonly helloCalls: number
}

const FACTORY = "burn_p2p_python_runtime.reference_workload:make"
const POOL_SIZE = 2
/** Concurrent callers in both configurations: enough to keep every worker of the pool busy. */
const CALLERS = 4
/** Generated examples per trainWindow call: ~45 ms of Python on this machine's cores, idle. */
const EXAMPLES = 2048
const THROUGHPUT_BLOCKS = 4
const THROUGHPUT_TARGET = 1.8

const ms = (value: number) => `${value.toFixed(value < 10 ? 2 : 1)} ms`
const us = (value: number) => `${(value * 1000).toFixed(1)} µs`
const perSecond = (value: number) => `${value.toFixed(1)} calls/s`

const median = (samples: ReadonlyArray<number>): number => {
  const s = [...samples].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** Runs A and B blocks in ABBA order, so neither always goes first. */
const alternate = <A, B, E1, E2>(blocks: number, a: Effect.Effect<A, E1>, b: Effect.Effect<B, E2>) =>
  Effect.gen(function* () {
    const as: Array<A> = []
    const bs: Array<B> = []
    for (let block = 0; block < blocks; block++) {
      if (block % 4 === 0 || block % 4 === 3) {
        as.push(yield* a)
        bs.push(yield* b)
      } else {
        bs.push(yield* b)
        as.push(yield* a)
      }
    }
    return { a: as, b: bs }
  })

/** Lets `pid` (every thread) run on every core; returns the affinity read back. */
const unpin = (pid: number): string => {
  const all = `0-${os.cpus().length - 1}`
  const out = spawnSync("taskset", ["-a", "-p", "-c", all, String(pid)], { encoding: "utf8" })
  if (out.status !== 0) throw new Error(`taskset -a -p -c ${all} ${pid}: ${out.error?.message ?? out.stderr.trim()}`)
  return affinity(pid)
}

/** Seconds of CPU the process has used (user + system), from `/proc/PID/stat` read through `sh` (Deno wants -A for /proc). */
const cpuSeconds = (pid: number): number => {
  const out = spawnSync("sh", ["-c", `cat /proc/${pid}/stat; getconf CLK_TCK`], { encoding: "utf8" })
  const [stat, tick] = out.stdout.trim().split("\n")
  // Fields after "(comm)": state is field 3, utime 14 and stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / Number(tick)
}

const batch: BatchRef = {
  kind: "micro_epoch",
  leaseId: "bench-pool",
  microshardIds: ["bench-pool-0"],
  ordinals: [0],
  bytesLen: 0,
  pipelineKind: "generated-dataset",
  payload: { seed: 1, examples_per_microshard: EXAMPLES },
}

const optionsOf = (python: string): PythonWorker.Options => ({ workloadFactory: FACTORY, pythonExecutable: python })

/** `calls` calls of `one()` shared by `CALLERS` fibers, each taking the next call; calls per second. */
const throughput = <E>(calls: number, one: () => Effect.Effect<unknown, E>) =>
  Effect.gen(function* () {
    let next = 0
    const caller = Effect.gen(function* () {
      while (next < calls) {
        next++
        yield* one()
      }
    })
    const started = performance.now()
    yield* Effect.all(Array.from({ length: CALLERS }, () => caller), { concurrency: "unbounded", discard: true })
    return calls / ((performance.now() - started) / 1000)
  })

/** `n` sequential calls of `call()`, each timed; milliseconds. */
const timedLoop = <E>(n: number, call: () => Effect.Effect<unknown, E>) =>
  Effect.gen(function* () {
    const samples: Array<number> = []
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      yield* call()
      samples.push(performance.now() - started)
    }
    return samples
  })

/** The section; needs a `Scope` (the workers live in it). */
export const poolSection = (settings: PoolSettings) =>
  Effect.gen(function* () {
    const section = Table.make(
      `pool (PythonWorkerPool of ${POOL_SIZE} vs one worker; client cpu0, workers unpinned over ${os.cpus().length} cores)`,
    )
    const loadBefore = os.loadavg()[0]
    const single = Context.get(yield* Layer.build(PythonWorker.layer(optionsOf(settings.python))), PythonWorker)
    const pool = Context.get(
      yield* Layer.build(PythonWorkerPool.layer({ size: POOL_SIZE, options: () => optionsOf(settings.python) })),
      PythonWorkerPool,
    )
    const pids = { single: single.pid, pool: pool.workers.map((worker) => worker.pid) }
    const affinities = { single: unpin(pids.single), pool: pids.pool.map(unpin) }

    // One model per worker; a pool worker's calls go to its own model.
    const singleModel = yield* single.initModel("cpu")
    const poolModels = yield* Effect.forEach(pool.workers, (worker) => worker.initModel("cpu"))

    const oneCall = () => single.trainWindow(singleModel, [batch])
    const pooledCall = () => pool.withWorker((worker, index) => worker.trainWindow(poolModels[index], [batch]))
    // Warm-up: every worker generates the data once and compiles its paths.
    yield* oneCall()
    yield* Effect.forEach(pool.workers, (worker, index) => worker.trainWindow(poolModels[index], [batch]))
    const callMs = median(yield* timedLoop(5, oneCall))

    const cpuBefore = pids.pool.map(cpuSeconds)
    const rates = yield* alternate(
      THROUGHPUT_BLOCKS,
      throughput(settings.calls, pooledCall),
      throughput(settings.calls, oneCall),
    )
    const cpuUsed = pids.pool.map((pid, index) => cpuSeconds(pid) - cpuBefore[index])
    const poolRate = median(rates.a)
    const singleRate = median(rates.b)

    // Per-call overhead: the pool's free list and fiber hand-off around a call that costs almost nothing itself.
    const blocks = 10
    const perBlock = Math.max(1, Math.ceil(settings.helloCalls / blocks))
    const pooledHello = () => pool.withWorker((worker) => worker.hello())
    const directHello = () => single.hello()
    // The pool's free list is FIFO: one caller gets worker 0, 1, 0, ... Called directly in the same rotation,
    // the same processes answer without withWorker, which isolates its cost from the processes' own.
    let turn = 0
    const rotatedHello = () => pool.workers[turn++ % POOL_SIZE].hello()
    yield* timedLoop(Math.min(500, perBlock), pooledHello)
    yield* timedLoop(Math.min(500, perBlock), directHello)
    yield* timedLoop(Math.min(500, perBlock), rotatedHello)
    const hellos = yield* alternate(blocks, timedLoop(perBlock, pooledHello), timedLoop(perBlock, directHello))
    const rotated = yield* alternate(blocks, timedLoop(perBlock, pooledHello), timedLoop(perBlock, rotatedHello))
    const pooledMedian = median([...hellos.a.flat(), ...rotated.a.flat()])
    const directMedian = median(hellos.b.flat())
    const rotatedMedian = median(rotated.b.flat())
    const loadAfter = os.loadavg()[0]

    Table.compare(section, {
      figure: `trainWindow CPU-bound (~${ms(callMs)} each), ${CALLERS} callers x ${settings.calls} calls: ` +
        `pool of ${POOL_SIZE} vs one worker, throughput (median of ${THROUGHPUT_BLOCKS / 2} blocks each)`,
      ours: poolRate,
      baseline: singleRate,
      unit: perSecond,
      target: Table.atLeast(THROUGHPUT_TARGET),
    })
    Table.compare(section, {
      figure: `pool.withWorker((w) => w.hello()) vs worker.hello() on a standalone worker, median ` +
        `(n=${2 * perBlock * blocks} / ${perBlock * blocks})`,
      ours: pooledMedian,
      baseline: directMedian,
      unit: us,
    })
    Table.compare(section, {
      figure: `pool.withWorker((w) => w.hello()) vs pool.workers[i].hello() in withWorker's rotation, median ` +
        `(n=${2 * perBlock * blocks} / ${perBlock * blocks})`,
      ours: pooledMedian,
      baseline: rotatedMedian,
      unit: us,
    })
    Table.note(
      section,
      `per-call overhead of withWorker (median pooled - median direct): ${
        us(pooledMedian - directMedian)
      } over the standalone worker, ` +
        `${us(pooledMedian - rotatedMedian)} over the pool's own workers called directly; one caller, so a worker ` +
        `is always free and nothing queues; both are the same hello() path (no tracer installed)`,
    )
    Table.note(
      section,
      `workers NOT pinned (unpinned with taskset after start, read back): single ${affinities.single}, ` +
        `pool ${affinities.pool.join(" / ")}; client ${affinity(Deno.pid)}, so one busy worker shares cpu0 with the ` +
        `client; a 2-core ceiling is 2.00x, less what the client and other processes take`,
    )
    Table.note(
      section,
      `pool workers' CPU over the throughput blocks (/proc utime+stime): ${
        cpuUsed.map((s) => `${s.toFixed(2)} s`).join(" / ")
      }; ` +
        `load average (1 min) ${loadBefore.toFixed(2)} before, ${
          loadAfter.toFixed(2)
        } after (other processes skew the ratio)`,
    )
    Table.note(
      section,
      `per block: ${CALLERS} fibers take calls from one counter; pool: withWorker hands each call to a free worker, ` +
        `which trains its own model; one worker: the same fibers queue on its wire lock; ` +
        `standard-library workload, ${EXAMPLES} generated examples per call, ${settings.calls} calls per block`,
    )
    return section
  })
