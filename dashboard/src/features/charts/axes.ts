import {
  formatClock,
  formatCompact,
  formatFixed,
  formatInt,
  formatPercent,
  formatSci,
  formatValue,
} from '../../lib/format'
import type { SeriesX } from '../../types/protocol'
import type { AxisFormat } from './TimeSeriesChart'

export const X_AXES: Record<SeriesX, AxisFormat> = {
  step: { title: 'step', format: (v) => formatInt(v) },
  tokens_seen: { title: 'tokens', format: (v) => formatCompact(v) },
  time: { title: 'time', format: (v) => formatClock(v), ticks: (min, max) => clockTicks(min, max) },
}

export const X_LABELS: Record<SeriesX, string> = { step: 'Step', tokens_seen: 'Tokens', time: 'Wall time' }

export const LOSS_AXIS: AxisFormat = { title: 'loss', format: (v) => formatValue(v) }
export const TOKENS_PER_S_AXIS: AxisFormat = {
  title: 'tokens/s',
  format: (v) => (Math.abs(v) < 1e6 ? formatInt(v) : formatCompact(v)),
}
export const MFU_AXIS: AxisFormat = { title: 'MFU', format: (v) => formatPercent(v, 0) }
export const TFLOPS_AXIS: AxisFormat = { title: 'TFLOP/s', format: (v) => formatFixed(v, 2) }
export const LR_AXIS: AxisFormat = { title: 'learning rate', format: (v) => (v === 0 ? '0' : formatSci(v, 1)) }
export const SCALE_AXIS: AxisFormat = { title: 'loss scale', format: (v) => formatCompact(v) }
export const NORM_AXIS: AxisFormat = { title: 'norm', format: (v) => formatValue(v) }
export const PERCENT_AXIS: AxisFormat = { title: '%', format: (v) => `${formatInt(v)} %` }

// seconds between wall-time ticks: whole minutes and hours
const CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]

/** At most 6 ticks on whole seconds, minutes or hours. */
export function clockTicks(min: number, max: number): number[] {
  const span = max - min
  if (!(span > 0)) return [min]
  const step = CLOCK_STEPS.find((s) => span / s <= 6) ?? Math.ceil(span / 6 / 86400) * 86400
  const out: number[] = []
  for (let t = Math.ceil(min / step) * step; t <= max; t += step) out.push(t)
  return out
}
