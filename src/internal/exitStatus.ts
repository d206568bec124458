/**
 * How a process ended, said one way everywhere.
 *
 * @internal
 */

/** @internal */
export interface ExitStatus {
  readonly exitCode: number | null
  readonly signal: string | null
}

/**
 * "exited with code 2", "was killed by SIGKILL".
 *
 * @internal
 */
export const describeExit = (exitCode: number | null, signal: string | null): string =>
  signal !== null
    ? `was killed by ${signal}`
    : exitCode !== null
    ? `exited with code ${exitCode}`
    : "is gone (exit status unknown)"

/**
 * The fields of the process-group id in `/proc/<pid>/stat`: the command name
 * (field 2) may hold spaces and parentheses, so fields are counted from the
 * last `)`.
 *
 * @internal
 */
export const parseStat = (stat: string): { readonly state: string; readonly ppid: number; readonly pgid: number } => {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { state: fields[0] ?? "", ppid: Number(fields[1]), pgid: Number(fields[2]) }
}
