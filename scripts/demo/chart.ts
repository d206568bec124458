/**
 * The accuracy-and-loss chart, as a hand-written SVG: accuracy on the left
 * axis (0 to 1), loss on the right axis (0 to a round number above the
 * largest loss), rounds along the bottom, the legend above the plot.
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
const BOTTOM = 60
const ACCURACY_COLOR = "#1f77b4"
const LOSS_COLOR = "#d62728"

const escapeXml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** The smallest of 1, 2, 2.5, 5 x 10^k at or above `value`. */
const niceCeiling = (value: number) => {
  if (!(value > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  return ([1, 2, 2.5, 5, 10].find((step) => step * power >= value) ?? 10) * power
}

const fixed = (value: number) => Number(value.toFixed(2)).toString()

export const renderChart = (points: ReadonlyArray<ChartPoint>, title: string): string => {
  const plotWidth = WIDTH - LEFT - RIGHT
  const plotHeight = HEIGHT - TOP - BOTTOM
  const lastRound = Math.max(1, ...points.map((point) => point.round))
  const lossMax = niceCeiling(Math.max(0, ...points.map((point) => point.loss)))
  const x = (round: number) => LEFT + (round / lastRound) * plotWidth
  const y = (fraction: number) => TOP + (1 - fraction) * plotHeight
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
    `<line x1="${fixed(x(round))}" y1="${TOP + plotHeight}" x2="${fixed(x(round))}" y2="${
      TOP + plotHeight + 5
    }" stroke="#333"/>` +
    `<text x="${fixed(x(round))}" y="${TOP + plotHeight + 20}" text-anchor="middle">${round}</text>`
  )
  const series = (name: string, color: string, value: (point: ChartPoint) => number, dashed: boolean) => {
    const coordinates = points.map((point) => `${fixed(x(point.round))},${fixed(y(value(point)))}`)
    const markers = points.map((point) =>
      `<circle cx="${fixed(x(point.round))}" cy="${fixed(y(value(point)))}" r="3.5" fill="${color}"/>`
    )
    return [
      `<g class="series" data-series="${name}">`,
      `<polyline fill="none" stroke="${color}" stroke-width="2.5"${dashed ? ` stroke-dasharray="7 4"` : ""} points="${
        coordinates.join(" ")
      }"/>`,
      ...markers,
      `</g>`,
    ]
  }
  // One row between the title and the plot, so it never covers a series.
  const legendX = LEFT + plotWidth / 2 - 150
  const legendY = TOP - 22
  const legend = [
    `<g class="legend">`,
    `<rect x="${legendX}" y="${legendY - 12}" width="300" height="24" fill="white" stroke="#bbb"/>`,
    `<line x1="${legendX + 10}" y1="${legendY}" x2="${
      legendX + 40
    }" y2="${legendY}" stroke="${ACCURACY_COLOR}" stroke-width="2.5"/>`,
    `<text x="${legendX + 48}" y="${legendY + 4}">accuracy (Test)</text>`,
    `<line x1="${legendX + 160}" y1="${legendY}" x2="${
      legendX + 190
    }" y2="${legendY}" stroke="${LOSS_COLOR}" stroke-width="2.5" stroke-dasharray="7 4"/>`,
    `<text x="${legendX + 198}" y="${legendY + 4}">loss (Test)</text>`,
    `</g>`,
  ]

  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="28" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    ...grid,
    `<g class="axes" stroke="#333">`,
    `<line x1="${LEFT}" y1="${TOP}" x2="${LEFT}" y2="${TOP + plotHeight}"/>`,
    `<line x1="${LEFT + plotWidth}" y1="${TOP}" x2="${LEFT + plotWidth}" y2="${TOP + plotHeight}"/>`,
    `<line x1="${LEFT}" y1="${TOP + plotHeight}" x2="${LEFT + plotWidth}" y2="${TOP + plotHeight}"/>`,
    `</g>`,
    ...leftLabels,
    ...rightLabels,
    ...bottomLabels,
    `<text x="${LEFT + plotWidth / 2}" y="${HEIGHT - 16}" text-anchor="middle">round (0 = genesis model)</text>`,
    `<text transform="translate(20 ${
      TOP + plotHeight / 2
    }) rotate(-90)" text-anchor="middle" fill="${ACCURACY_COLOR}">merged model accuracy</text>`,
    `<text transform="translate(${WIDTH - 18} ${
      TOP + plotHeight / 2
    }) rotate(90)" text-anchor="middle" fill="${LOSS_COLOR}">merged model loss</text>`,
    ...series("accuracy", ACCURACY_COLOR, (point) => point.accuracy, false),
    ...series("loss", LOSS_COLOR, (point) => point.loss / lossMax, true),
    ...legend,
    `</svg>`,
    "",
  ].join("\n")
}
