// Everything one run's stream has brought, by record type. Arrays only grow; `version` counts changes so
// views can memoise on it (and build new arrays for the charts: Chart.js must never see a mutated one).
import type {
  ControlRecord,
  EvalRecord,
  MetricRecord,
  ParamsRecord,
  RunStateRecord,
  SystemRecord,
  TrainRecord,
} from '../../types/protocol'

export interface RunData {
  runId: string
  version: number
  lastSeq: number
  train: TrainRecord[]
  eval: EvalRecord[]
  system: SystemRecord[]
  params: ParamsRecord[]
  states: RunStateRecord[]
  controls: Map<string, ControlRecord>
}

export function emptyRunData(runId: string): RunData {
  return {
    runId,
    version: 0,
    lastSeq: -1,
    train: [],
    eval: [],
    system: [],
    params: [],
    states: [],
    controls: new Map(),
  }
}

/** Add records in seq order; any at or below the last seq held are ignored (never a duplicate point). */
export function addRecords(data: RunData, records: readonly MetricRecord[]): boolean {
  let changed = false
  for (const record of records) {
    if (record.run_id !== data.runId || !(record.seq > data.lastSeq)) continue
    data.lastSeq = record.seq
    changed = true
    switch (record.type) {
      case 'train':
        data.train.push(record)
        break
      case 'eval':
        data.eval.push(record)
        break
      case 'system':
        data.system.push(record)
        break
      case 'params':
        data.params.push(record)
        break
      case 'run_state':
        data.states.push(record)
        break
      case 'control':
        data.controls.set(record.command_id, record)
        break
      default:
        break
    }
  }
  if (changed) data.version += 1
  return changed
}

export function lastOf<T>(items: readonly T[]): T | undefined {
  return items.length > 0 ? items[items.length - 1] : undefined
}
