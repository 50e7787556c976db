import type { LegendEntry } from '../../components/Legend'
import { MARKER_STYLE } from '../../lib/palette'
import type { MarkerKind } from '../series/seriesView'
import type { LineDataset } from './datasets'

const MARKER_LEGEND: Record<MarkerKind, LegendEntry> = {
  nan: { label: 'NaN', color: MARKER_STYLE.nan.color, kind: 'cross' },
  inf: { label: '+Inf', color: MARKER_STYLE.inf.color, kind: 'triangle' },
  '-inf': { label: '−Inf', color: MARKER_STYLE['-inf'].color, kind: 'triangle' },
  skipped: { label: 'skipped step', color: MARKER_STYLE.skipped.color, kind: 'diamond' },
}

/** Legend entries for the marker kinds drawn, each once. */
export function markerLegend(datasets: readonly LineDataset[]): LegendEntry[] {
  const kinds = new Set<MarkerKind>()
  for (const d of datasets) if (d.series.role === 'markers') for (const p of d.data) if (p.kind) kinds.add(p.kind)
  return (Object.keys(MARKER_LEGEND) as MarkerKind[]).filter((k) => kinds.has(k)).map((k) => MARKER_LEGEND[k])
}
