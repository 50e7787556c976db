// A run's series as the page holds them (the run followed live), in the shape bucketLocally takes.
import type { SeriesX, TrainRecord } from '../../types/protocol'
import type { RunData } from '../stream/runData'
import { skippedStepXs, type LocalSeries } from './seriesView'

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

/**
 * The records of the branch the run is on: a resume from an earlier checkpoint logs steps again, and
 * the records past that step logged before it (the abandoned branch) leave the view, as the sidecar's
 * series view does. Records come in seq order.
 */
export function currentBranch<T extends { step: number }>(records: readonly T[]): T[] {
  const kept: T[] = []
  for (const record of records) {
    while (kept.length > 0 && (kept[kept.length - 1]?.step ?? -1) >= record.step) kept.pop()
    kept.push(record)
  }
  return kept
}

export function localSeries(data: RunData, key: SeriesKey, x: SeriesX): LocalSeries {
  const train = currentBranch(data.train)
  if (key === 'val_loss' || key === 'val_bpb') {
    const evals = currentBranch(data.eval)
    const xs = evals.map((r) => (x === 'step' ? r.step : x === 'time' ? r.time : tokensAtStep(train, r.step)))
    return { xs, values: evals.map((r) => r[key]) }
  }
  const xs = train.map((r) => xOf(r, x))
  const values = train.map((r) => r[key])
  if (!SKIP_MARKED.has(key)) return { xs, values }
  return {
    xs,
    values,
    skipped: skippedStepXs(
      xs,
      train.map((r) => r.skipped_steps),
    ),
  }
}
