/**
 * `deno task test`: the TypeScript suite (vitest) and the Python suite
 * (unittest), then one closing line with the totals. Exits non-zero when
 * either fails. Extra arguments go to vitest (e.g. a file filter).
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import process from "node:process"

const python = process.env.TEST_PYTHON ?? (existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3")
mkdirSync(".test-results", { recursive: true })

/** The first lines of a failure message without the test runner's own frames, indented under its test's name. */
const excerpt = (message: string) =>
  message.split("\n").filter((line) => !/node_modules|ext:core|^\s*at new Promise/.test(line)).slice(0, 12)
    .map((line) => `    ${line}`).join("\n")

const run = async (command: string, args: Array<string>): Promise<{ code: number; output: string }> => {
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).spawn()
  let output = ""
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      output += new TextDecoder().decode(chunk)
      await sink.write(chunk)
    }
  }
  await Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)])
  return { code: (await child.status).code, output }
}

const vitest = await run(Deno.execPath(), [
  "run",
  "-A",
  "node_modules/vitest/vitest.mjs",
  "run",
  "--reporter=default",
  "--reporter=json",
  "--outputFile.json=.test-results/vitest.json",
  ...Deno.args,
])
let ts = { passed: 0, failed: 0, skipped: 0 }
// Named again at the very end: CI keeps only the tail of what a run prints.
const tsFailures: Array<string> = []
try {
  const report = JSON.parse(readFileSync(".test-results/vitest.json", "utf8"))
  ts = {
    passed: report.numPassedTests,
    failed: report.numFailedTests,
    skipped: report.numPendingTests + report.numTodoTests,
  }
  for (const file of report.testResults) {
    const name = String(file.name).replace(`${Deno.cwd()}/`, "")
    if (file.status === "failed" && file.assertionResults.length === 0) {
      tsFailures.push(`${name}\n${excerpt(String(file.message))}`)
    }
    for (const test of file.assertionResults) {
      if (test.status !== "failed") continue
      tsFailures.push(`${name} > ${test.fullName}\n${excerpt(test.failureMessages.join("\n"))}`)
    }
  }
} catch {
  ts.failed = 1
}

console.log(`\npython unit tests (${python})`)
const unittest = await run(python, ["-m", "unittest", "discover", "-s", "python/tests", "-t", "python", "-v"])
const ran = Number(/Ran (\d+) tests?/.exec(unittest.output)?.[1] ?? 0)
const count = (name: string) => Number(new RegExp(`${name}=(\\d+)`).exec(unittest.output)?.[1] ?? 0)
const pyFailed = count("failures") + count("errors") + (unittest.code !== 0 && ran === 0 ? 1 : 0)
const pySkipped = count("skipped")
const py = { passed: ran - pyFailed - pySkipped, failed: pyFailed, skipped: pySkipped }

if (tsFailures.length > 0) console.log(`\nfailed typescript tests:\n${tsFailures.join("\n")}`)
console.log(`\ntypescript: ${ts.passed} passed, ${ts.failed} failed, ${ts.skipped} skipped`)
console.log(`python: ${py.passed} passed, ${py.failed} failed, ${py.skipped} skipped`)
const failed = ts.failed + py.failed
console.log(`${ts.passed + py.passed} passed, ${failed} failed, ${ts.skipped + py.skipped} skipped`)
process.exit(vitest.code !== 0 || unittest.code !== 0 || failed > 0 ? 1 : 0)
