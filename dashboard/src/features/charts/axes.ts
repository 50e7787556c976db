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
  time: { title: 'time', format: (v) => formatClock(v) },
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
