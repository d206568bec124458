/**
 * The bench report: sections of (figure, ours, baseline, ratio, target, met/missed) rows.
 *
 * A section is built row by row, so a new measurement (a worker pool, pack I/O
 * from a Python script printing JSON, `aggregate.ts`) adds rows with `compare`
 * or `skip` and nothing else changes:
 *
 *     const section = Table.make("same core")
 *     Table.compare(section, { figure: "hello median", ours: 20e-3, baseline: 15e-3, unit: us, target: Table.atMost(1.5) })
 *     console.log(Table.render(section))
 *
 * Figures another program prints as JSON come in through `External.json` (`external.ts`).
 */

/** How a figure is judged against its baseline. */
export interface Target {
  readonly label: string
  readonly met: (ours: number, baseline: number) => boolean
}

/** ours / baseline <= limit (a cost: lower is better). */
export const atMost = (limit: number): Target => ({
  label: `<= ${limit.toFixed(2)}x`,
  met: (ours, baseline) => ours / baseline <= limit,
})

/** ours / baseline >= limit (a rate: higher is better). */
export const atLeast = (limit: number): Target => ({
  label: `>= ${limit.toFixed(2)}x`,
  met: (ours, baseline) => ours / baseline >= limit,
})

/** ours <= baseline + slack, with the slack shown in `unit`. */
export const plusAtMost = (slack: number, unit: (value: number) => string): Target => ({
  label: `<= +${unit(slack)}`,
  met: (ours, baseline) => ours - baseline <= slack,
})

/** A target on ours alone (the baseline is shown for scale only). */
export const absolute = (label: string, met: (ours: number) => boolean): Target => ({ label, met: (ours) => met(ours) })

export interface Row {
  readonly figure: string
  readonly ours: string
  readonly baseline: string
  readonly ratio: string
  readonly target: string
  readonly verdict: "met" | "missed" | ""
}

export interface Section {
  readonly title: string
  readonly rows: Array<Row>
  readonly notes: Array<string>
}

export const make = (title: string): Section => ({ title, rows: [], notes: [] })

export const times = (value: number): string => `${value.toFixed(2)}x`

/** Adds a row comparing `ours` with `baseline`, both in `unit`; returns whether the target was met. */
export const compare = (
  section: Section,
  row: {
    readonly figure: string
    readonly ours: number
    readonly baseline: number
    readonly unit: (value: number) => string
    readonly target?: Target | undefined
  },
): boolean | undefined => {
  const met = row.target?.met(row.ours, row.baseline)
  section.rows.push({
    figure: row.figure,
    ours: row.unit(row.ours),
    baseline: row.unit(row.baseline),
    ratio: times(row.ours / row.baseline),
    target: row.target?.label ?? "",
    verdict: met === undefined ? "" : met ? "met" : "missed",
  })
  return met
}

/** A figure that could not be produced, and why. */
export const skip = (section: Section, figure: string, why: string): void => {
  section.rows.push({ figure, ours: `skipped: ${why}`, baseline: "", ratio: "", target: "", verdict: "" })
}

export const note = (section: Section, text: string): void => {
  section.notes.push(text)
}

const HEADER: Row = {
  figure: "figure",
  ours: "ours",
  baseline: "baseline",
  ratio: "ratio",
  target: "target",
  verdict: "",
}
const COLUMNS = ["figure", "ours", "baseline", "ratio", "target", "verdict"] as const

export const render = (section: Section): string => {
  // A skipped row's text spans the columns after the figure, so it does not widen them.
  const measured = [HEADER, ...section.rows.filter((row) => !row.ours.startsWith("skipped: "))]
  const widths = COLUMNS.map((column) => Math.max(...measured.map((row) => row[column].length)))
  const line = (row: Row) =>
    row.ours.startsWith("skipped: ") ? `${row.figure.padEnd(widths[0])}  ${row.ours}` : COLUMNS.map((
      column,
      i,
    ) => (i === 0 || i === 5 ? row[column].padEnd(widths[i]) : row[column].padStart(widths[i])))
      .join("  ").trimEnd()
  const met = section.rows.filter((row) => row.verdict === "met").length
  const judged = section.rows.filter((row) => row.verdict !== "").length
  return [
    `== ${section.title}: ${met}/${judged} targets met`,
    line(HEADER),
    widths.map((width) => "-".repeat(width)).join("  "),
    ...section.rows.map(line),
    ...section.notes.map((text) => `  * ${text}`),
  ].join("\n")
}
