// A run's series as the page holds them (the run followed live), read in place from its records.
import type { SeriesX, TrainRecord } from '../../types/protocol'
import type { RunData } from '../stream/runData'
import type { LocalSeries } from './seriesView'

export type TrainKey =
  'loss' | 'lr' | 'grad_norm' | 'loss_scale' | 'tokens_per_s' | 'tflops' | 'mfu' | 'step_time' | 'memory_gb'
export type SeriesKey = TrainKey | 'val_loss' | 'val_bpb'

const SKIP_MARKED: ReadonlySet<SeriesKey> = new Set<SeriesKey>(['loss', 'loss_scale'])

function xOf(record: TrainRecord, x: SeriesX): number {
  return x === 'step' ? record.step : x === 'tokens_seen' ? record.tokens_seen : record.time
}

/** tokens seen at a step, from the train record at or before it (eval records carry no token count) */
function tokensAtStep(train: readonly TrainRecord[], step: number): number {
  let lo = 0
  let hi = train.length - 1
  let best = 0
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const record = train[mid]
    if (!record) break
    if (record.step <= step) {
      best = record.tokens_seen
      lo = mid + 1
    } else hi = mid - 1
  }
  return best
}

/** The series `key` of the branch the run is on, against x; a snapshot of the records held now. */
export function localSeries(data: RunData, key: SeriesKey, x: SeriesX): LocalSeries {
  const train = data.branchTrain
  if (key === 'val_loss' || key === 'val_bpb') {
    const evals = data.branchEval
    const xs = evals.map((r) => (x === 'step' ? r.step : x === 'time' ? r.time : tokensAtStep(train, r.step)))
    return { length: evals.length, x: (i) => xs[i] ?? Number.NaN, value: (i) => evals[i]?.[key] }
  }
  return {
    length: train.length,
    x: (i) => {
      const record = train[i]
      return record ? xOf(record, x) : Number.NaN
    },
    value: (i) => train[i]?.[key],
    ...(SKIP_MARKED.has(key) ? { skipped: data.skipped.map((r) => xOf(r, x)) } : {}),
  }
}
