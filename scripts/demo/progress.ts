/**
 * Live progress: the round logic emits `DemoEvent`s; a renderer shows them.
 * On a terminal, a block of status lines (the round and elapsed time, then
 * one line per worker saying what it does and for how long) is redrawn in
 * place, with log lines scrolling above it. Anywhere else (a pipe, a log
 * file) every event is one plain timestamped line, without escape codes.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import process from "node:process"

export type DemoEvent = Data.TaggedEnum<{
  /** What a worker (`reducer`, `peer-0`, ...) is doing from now on. */
  Phase: { readonly actor: string; readonly text: string }
  /** The worker waits for its next task (a status line on a terminal; not worth a log line). */
  Idle: { readonly actor: string }
  RoundStarted: { readonly round: number; readonly rounds: number }
  /** A line worth keeping: a worker ready, a patch outcome, a round's numbers. */
  Log: { readonly text: string }
}>
export const DemoEvent = Data.taggedEnum<DemoEvent>()

export interface Progress {
  readonly emit: (event: DemoEvent) => Effect.Effect<void>
}

export const silent: Progress = { emit: () => Effect.void }

const seconds = (millis: number) => `${(millis / 1000).toFixed(1)}s`

const timeOfDay = (millis: number) => new Date(millis).toISOString().slice(11, 23)

/** One timestamped line per event (idle workers excepted), for logs and pipes. */
export const plain = (write: (text: string) => void): Effect.Effect<Progress> =>
  Effect.map(Clock.currentTimeMillis, (started): Progress => ({
    emit: (event) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const text = DemoEvent.$match(event, {
          Phase: ({ actor, text }) => `${actor}: ${text}`,
          Idle: () => null,
          RoundStarted: ({ round, rounds }) => `round ${round}/${rounds}`,
          Log: ({ text }) => text,
        })
        if (text !== null) write(`[${timeOfDay(now)} +${seconds(now - started)}] ${text}\n`)
      }),
  }))

const ESC = "\x1b["
const REDRAW_EVERY = "100 millis"

/**
 * The redrawn status block. Lines are cut to the terminal width, so none
 * wraps and the cursor arithmetic stays right.
 */
export const terminal = (
  write: (text: string) => void,
  columns: () => number,
): Effect.Effect<Progress, never, Scope.Scope> =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    let round = "starting workers"
    const actors = new Map<string, { text: string; since: number }>()
    let drawn = 0

    const fit = (line: string) => {
      const width = Math.max(20, columns() - 1)
      return line.length > width ? `${line.slice(0, width - 1)}…` : line
    }
    const erase = () => (drawn > 0 ? `${ESC}${drawn}F${ESC}J` : "")
    const block = (now: number) => {
      const name = Math.max(0, ...[...actors.keys()].map((actor) => actor.length))
      const lines = [
        `${ESC}1m${fit(`${round} · elapsed ${seconds(now - started)}`)}${ESC}0m`,
        ...[...actors].map(([actor, { text, since }]) =>
          fit(`  ${actor.padEnd(name)}  ${seconds(now - since).padStart(6)}  ${text}`)
        ),
      ]
      drawn = lines.length
      return lines.map((line) => `${ESC}2K${line}\n`).join("")
    }
    const redraw = Effect.map(Clock.currentTimeMillis, (now) => write(erase() + block(now)))

    write(`${ESC}?25l`)
    yield* Effect.addFinalizer(() => Effect.zipRight(redraw, Effect.sync(() => write(`${ESC}?25h`))))
    yield* Effect.forkScoped(Effect.repeat(redraw, Schedule.spaced(REDRAW_EVERY)))

    return {
      emit: (event) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          let scrolled = ""
          DemoEvent.$match(event, {
            Phase: ({ actor, text }) => void actors.set(actor, { text, since: now }),
            Idle: ({ actor }) => void actors.set(actor, { text: "idle", since: now }),
            RoundStarted: ({ round: current, rounds }) => void (round = `round ${current}/${rounds}`),
            Log: ({ text }) => void (scrolled = `${ESC}2K+${seconds(now - started)} ${text}\n`),
          })
          write(erase() + scrolled + block(now))
        }),
    }
  })

/** The terminal renderer when stdout is a TTY, else plain lines. */
export const forStdout: Effect.Effect<Progress, never, Scope.Scope> = Effect.suspend(() => {
  const write = (text: string) => void process.stdout.write(text)
  return process.stdout.isTTY ? terminal(write, () => process.stdout.columns || 80) : plain(write)
})
