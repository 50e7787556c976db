// Chart.js datasets for one series view: the min/max band of each bucket, the raw line (faint when a
// smoothed line is drawn over it), the smoothed line, and markers for NaN/Inf values and skipped fp16
// steps. New arrays every time: Chart.js must never be handed an array that is then mutated.
import type { ChartDataset } from 'chart.js'
import { MARKER_STYLE, withAlpha } from '../../lib/palette'
import { placeMarkers, type MarkerKind, type SeriesView } from '../series/seriesView'

export interface ChartPoint {
  x: number
  y: number
  /** the bucket's raw extremes, for the tooltip */
  min?: number
  max?: number
  kind?: MarkerKind
}

export type SeriesRole = 'band-min' | 'band-max' | 'raw' | 'smoothed' | 'markers' | 'val'

export interface SeriesTag {
  runId: string
  key: string
  role: SeriesRole
}

export type LineDataset = ChartDataset<'line', ChartPoint[]> & { series: SeriesTag }

export interface DatasetStyle {
  runId: string
  key: string
  /** what the tooltip calls it, e.g. "run-a loss" */
  label: string
  color: string
  /** 0: no smoothed line, the raw one drawn solid */
  smoothing: number
  /** subtracted from every x (wall time shown from the run's start) */
  xOffset?: number
  yAxisID?: string
  /** drawn as evaluation points (dashed, with dots) */
  asEval?: boolean
  /** a dashed raw line (a second quantity on the same chart) */
  dash?: number[]
  hidden?: boolean
}

export function seriesDatasets(view: SeriesView, style: DatasetStyle): LineDataset[] {
  const off = style.xOffset ?? 0
  const tag = (role: SeriesRole): SeriesTag => ({ runId: style.runId, key: style.key, role })
  const id = (role: SeriesRole): string => `${style.runId}:${style.key}:${role}`
  const common = {
    yAxisID: style.yAxisID ?? 'y',
    hidden: style.hidden ?? false,
    pointRadius: 0,
    pointHoverRadius: 3,
    spanGaps: true,
  }
  const out: LineDataset[] = []
  const smoothed = style.smoothing > 0 && !style.asEval

  if (style.asEval) {
    out.push({
      ...common,
      id: id('val'),
      label: style.label,
      series: tag('val'),
      data: view.points.map((p) => ({ x: p.x - off, y: p.last })),
      borderColor: style.color,
      backgroundColor: 'transparent',
      borderWidth: 1.5,
      borderDash: [6, 4],
      pointRadius: 4,
      pointBorderWidth: 2,
      pointStyle: 'circle',
      order: 1,
    } as LineDataset)
  } else {
    if (!view.raw) {
      out.push({
        ...common,
        id: id('band-min'),
        label: `${style.label} (bucket min)`,
        series: tag('band-min'),
        data: view.points.map((p) => ({ x: p.x - off, y: p.min })),
        borderColor: 'transparent',
        borderWidth: 0,
        fill: false,
        order: 4,
      } as LineDataset)
      out.push({
        ...common,
        id: id('band-max'),
        label: `${style.label} (bucket max)`,
        series: tag('band-max'),
        data: view.points.map((p) => ({ x: p.x - off, y: p.max })),
        borderColor: 'transparent',
        borderWidth: 0,
        backgroundColor: withAlpha(style.color, 0.16),
        fill: '-1',
        order: 4,
      } as LineDataset)
    }
    out.push({
      ...common,
      id: id('raw'),
      label: smoothed ? `${style.label} (raw)` : style.label,
      series: tag('raw'),
      data: view.points.map((p) => ({ x: p.x - off, y: p.last, min: p.min, max: p.max })),
      borderColor: smoothed ? withAlpha(style.color, 0.3) : style.color,
      backgroundColor: style.color,
      borderWidth: smoothed ? 1 : 1.75,
      ...(style.dash ? { borderDash: style.dash } : {}),
      order: 3,
    } as LineDataset)
    if (smoothed) {
      out.push({
        ...common,
        id: id('smoothed'),
        label: `${style.label} (smoothed)`,
        series: tag('smoothed'),
        data: view.points.map((p) => ({ x: p.x - off, y: p.smoothed })),
        borderColor: style.color,
        backgroundColor: style.color,
        borderWidth: 2,
        order: 2,
      } as LineDataset)
    }
  }

  const markers = placeMarkers(view, smoothed)
  if (markers.length > 0) {
    out.push({
      ...common,
      id: id('markers'),
      label: `${style.label} markers`,
      series: tag('markers'),
      data: markers.map((m) => ({ x: m.x - off, y: m.y, kind: m.kind })),
      showLine: false,
      pointRadius: 6,
      pointHoverRadius: 8,
      pointBorderWidth: 2,
      pointStyle: markers.map((m) => MARKER_STYLE[m.kind].pointStyle),
      pointBorderColor: markers.map((m) => MARKER_STYLE[m.kind].color),
      pointBackgroundColor: markers.map((m) => withAlpha(MARKER_STYLE[m.kind].color, 0.35)),
      order: 0,
    } as LineDataset)
  }
  return out
}
