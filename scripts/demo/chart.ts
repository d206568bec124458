/**
 * The accuracy-and-loss chart, as a hand-written SVG: accuracy on the left
 * axis (0 to 1, solid lines), loss on the right axis (0 to a round number
 * above the largest loss, dashed lines), rounds along the bottom, the legend
 * above the plot. One series (one mode) draws accuracy blue and loss red;
 * several (`--mode compare`) draw one colour per series, both lines in it.
 */

export interface ChartPoint {
  readonly round: number
  readonly accuracy: number
  readonly loss: number
}

const WIDTH = 720
const HEIGHT = 420
const LEFT = 70
const RIGHT = 80
const TOP = 84
const LEGEND_ROW = 22
const BOTTOM = 60
const ACCURACY_COLOR = "#1f77b4"
const LOSS_COLOR = "#d62728"
/** One per series when several are drawn (colour-blind-safe order from Tableau 10). */
const SERIES_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]

export interface ChartSeries {
  readonly name: string
  readonly points: ReadonlyArray<ChartPoint>
}

const escapeXml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** The smallest of 1, 2, 2.5, 5 x 10^k at or above `value`. */
const niceCeiling = (value: number) => {
  if (!(value > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  return ([1, 2, 2.5, 5, 10].find((step) => step * power >= value) ?? 10) * power
}

const fixed = (value: number) => Number(value.toFixed(2)).toString()

export const renderChart = (
  input: ReadonlyArray<ChartPoint> | ReadonlyArray<ChartSeries>,
  title: string,
  subtitle?: string,
): string => {
  const all: ReadonlyArray<ChartSeries> = input.length > 0 && "points" in input[0]
    ? input as ReadonlyArray<ChartSeries>
    : [{ name: "", points: input as ReadonlyArray<ChartPoint> }]
  const single = all.length === 1
  // Several series: the legend takes one row per four of them, plus the key row.
  const legendRows = single ? 1 : Math.ceil(all.length / 4) + 1
  const top = TOP + (legendRows - 1) * LEGEND_ROW
  const height = HEIGHT + (legendRows - 1) * LEGEND_ROW
  const plotWidth = WIDTH - LEFT - RIGHT
  const plotHeight = height - top - BOTTOM
  const points = all.flatMap((series) => series.points)
  const lastRound = Math.max(1, ...points.map((point) => point.round))
  // A diverging series (a byzantine peer under Mean) would flatten every other: the loss axis stops at
  // twice the largest genesis loss, and points above it sit on the top edge.
  const largestLoss = Math.max(0, ...points.map((point) => point.loss))
  const genesisLoss = Math.max(0, ...all.map((series) => series.points[0]?.loss ?? 0))
  const lossMax = niceCeiling(genesisLoss > 0 ? Math.min(largestLoss, 2 * genesisLoss) : largestLoss)
  const clipped = largestLoss > lossMax
  const x = (round: number) => LEFT + (round / lastRound) * plotWidth
  const y = (fraction: number) => top + (1 - fraction) * plotHeight
  const roundStep = Math.max(1, Math.ceil(lastRound / 10))
  const rounds = Array.from({ length: Math.floor(lastRound / roundStep) + 1 }, (_, index) => index * roundStep)
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1]

  const grid = ticks.map((tick) =>
    `<line x1="${LEFT}" y1="${fixed(y(tick))}" x2="${LEFT + plotWidth}" y2="${fixed(y(tick))}" stroke="#e5e5e5"/>`
  )
  const leftLabels = ticks.map((tick) =>
    `<text x="${LEFT - 8}" y="${fixed(y(tick) + 4)}" text-anchor="end">${tick.toFixed(1)}</text>`
  )
  const rightLabels = ticks.map((tick) =>
    `<text x="${LEFT + plotWidth + 8}" y="${fixed(y(tick) + 4)}">${Number((tick * lossMax).toPrecision(3))}</text>`
  )
  const bottomLabels = rounds.map((round) =>
    `<line x1="${fixed(x(round))}" y1="${top + plotHeight}" x2="${fixed(x(round))}" y2="${
      top + plotHeight + 5
    }" stroke="#333"/>` +
    `<text x="${fixed(x(round))}" y="${top + plotHeight + 20}" text-anchor="middle">${round}</text>`
  )
  const line = (
    name: string,
    color: string,
    series: ReadonlyArray<ChartPoint>,
    value: (point: ChartPoint) => number,
    dashed: boolean,
  ) => {
    const coordinates = series.map((point) => `${fixed(x(point.round))},${fixed(y(value(point)))}`)
    const markers = series.map((point) =>
      `<circle cx="${fixed(x(point.round))}" cy="${fixed(y(value(point)))}" r="${dashed ? 2.5 : 3.5}" fill="${color}"/>`
    )
    return [
      `<g class="series" data-series="${escapeXml(name)}">`,
      `<polyline fill="none" stroke="${color}" stroke-width="${dashed ? 1.8 : 2.5}"${
        dashed ? ` stroke-dasharray="7 4"` : ""
      } points="${coordinates.join(" ")}"/>`,
      ...markers,
      `</g>`,
    ]
  }
  const swatch = (lx: number, ly: number, color: string, dashed: boolean, label: string) => [
    `<line x1="${lx + 10}" y1="${ly}" x2="${lx + 40}" y2="${ly}" stroke="${color}" stroke-width="2.5"${
      dashed ? ` stroke-dasharray="7 4"` : ""
    }/>`,
    `<text x="${lx + 48}" y="${ly + 4}">${escapeXml(label)}</text>`,
  ]
  const lines = single
    ? [
      ...line("accuracy", ACCURACY_COLOR, all[0].points, (point) => point.accuracy, false),
      ...line("loss", LOSS_COLOR, all[0].points, (point) => Math.min(1, point.loss / lossMax), true),
    ]
    : all.flatMap((series, index) => [
      ...line(
        `${series.name} accuracy`,
        SERIES_COLORS[index % SERIES_COLORS.length],
        series.points,
        (point) => point.accuracy,
        false,
      ),
      ...line(
        `${series.name} loss`,
        SERIES_COLORS[index % SERIES_COLORS.length],
        series.points,
        (point) => Math.min(1, point.loss / lossMax),
        true,
      ),
    ])
  // Rows between the title and the plot, so the legend never covers a series.
  const legendWidth = single ? 300 : Math.min(4, all.length) * 140 + 20
  const legendX = LEFT + plotWidth / 2 - legendWidth / 2
  const legendY = TOP - 22
  const legend = [
    `<g class="legend">`,
    `<rect x="${legendX}" y="${legendY - 12}" width="${legendWidth}" height="${
      24 + (legendRows - 1) * LEGEND_ROW
    }" fill="white" stroke="#bbb"/>`,
    ...(single
      ? [
        ...swatch(legendX, legendY, ACCURACY_COLOR, false, "accuracy (Test)"),
        ...swatch(legendX + 150, legendY, LOSS_COLOR, true, "loss (Test)"),
      ]
      : [
        ...all.flatMap((series, index) =>
          swatch(
            legendX + (index % 4) * 140,
            legendY + Math.floor(index / 4) * LEGEND_ROW,
            SERIES_COLORS[index % SERIES_COLORS.length],
            false,
            series.name,
          )
        ),
        ...swatch(legendX, legendY + (legendRows - 1) * LEGEND_ROW, "#555", false, "accuracy (Test)"),
        ...swatch(legendX + 150, legendY + (legendRows - 1) * LEGEND_ROW, "#555", true, "loss (Test)"),
      ]),
    `</g>`,
  ]

  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(subtitle === undefined ? title : `${title}: ${subtitle}`)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="${
      subtitle === undefined ? 28 : 24
    }" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    ...(subtitle === undefined
      ? []
      : [`<text x="${WIDTH / 2}" y="42" text-anchor="middle" fill="#444">${escapeXml(subtitle)}</text>`]),
    ...grid,
    `<g class="axes" stroke="#333">`,
    `<line x1="${LEFT}" y1="${top}" x2="${LEFT}" y2="${top + plotHeight}"/>`,
    `<line x1="${LEFT + plotWidth}" y1="${top}" x2="${LEFT + plotWidth}" y2="${top + plotHeight}"/>`,
    `<line x1="${LEFT}" y1="${top + plotHeight}" x2="${LEFT + plotWidth}" y2="${top + plotHeight}"/>`,
    `</g>`,
    ...leftLabels,
    ...rightLabels,
    ...bottomLabels,
    `<text x="${LEFT + plotWidth / 2}" y="${height - 16}" text-anchor="middle">round (0 = genesis model)</text>`,
    `<text transform="translate(20 ${top + plotHeight / 2}) rotate(-90)" text-anchor="middle" fill="${
      single ? ACCURACY_COLOR : "#333"
    }">${single ? "canonical model accuracy" : "canonical model accuracy (solid)"}</text>`,
    `<text transform="translate(${WIDTH - 18} ${top + plotHeight / 2}) rotate(90)" text-anchor="middle" fill="${
      single ? LOSS_COLOR : "#333"
    }">${single ? "canonical model loss" : "canonical model loss (dashed)"}</text>`,
    ...lines,
    ...(clipped
      ? [
        `<text x="${WIDTH - 6}" y="${height - 4}" text-anchor="end" font-size="11" fill="#555">loss above ${
          Number(lossMax.toPrecision(3))
        } drawn at the top edge</text>`,
      ]
      : []),
    ...legend,
    `</svg>`,
    "",
  ].join("\n")
}
