// Okabe & Ito's palette, distinct under the common colour-vision deficiencies. A run keeps its colour
// everywhere (rail, charts, overlays): it is chosen by the run's place in start order, which does not
// change as newer runs appear. Yellow is left out (too faint on white).
export const RUN_COLORS = [
  '#0072B2', // blue
  '#E69F00', // orange
  '#009E73', // bluish green
  '#CC79A7', // reddish purple
  '#56B4E9', // sky blue
  '#D55E00', // vermillion
  '#7F7F7F', // grey
] as const

export function runColor(index: number): string {
  const n = RUN_COLORS.length
  return RUN_COLORS[((index % n) + n) % n] ?? RUN_COLORS[0]
}

/** #RRGGBB with an alpha, for faint raw lines and bands. */
export function withAlpha(hex: string, alpha: number): string {
  const v = Number.parseInt(hex.slice(1), 16)
  return `rgba(${String((v >> 16) & 255)}, ${String((v >> 8) & 255)}, ${String(v & 255)}, ${String(alpha)})`
}

/** Markers for values that are not there: shape first, colour second. */
export const MARKER_STYLE = {
  nan: { pointStyle: 'crossRot', color: '#D55E00', label: 'NaN' },
  inf: { pointStyle: 'triangle', color: '#D55E00', label: '+Inf' },
  '-inf': { pointStyle: 'triangle', color: '#D55E00', label: '−Inf' },
  skipped: { pointStyle: 'rectRot', color: '#CC79A7', label: 'skipped step (fp16 overflow)' },
} as const
