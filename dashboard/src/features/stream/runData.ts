// Everything one run's stream has brought, by record type. `version` counts changes so views can
// memoise on it (and build new arrays for the charts: Chart.js must never see a mutated one).
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
  /** every train record, in seq order */
  train: TrainRecord[]
  /**
   * The train and eval records of the branch the run is on. A resume from an earlier checkpoint logs
   * steps again; the records past that step logged before it (the abandoned branch) leave these, as
   * they leave the sidecar's series view. Appended in place; replaced by a new array on a rewind, so a
   * reader that kept the old array and its length still reads what it read.
   */
  branchTrain: TrainRecord[]
  branchEval: EvalRecord[]
  /** branch train records at which the fp16 skipped-step counter grew */
  skipped: TrainRecord[]
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
    branchTrain: [],
    branchEval: [],
    skipped: [],
    eval: [],
    system: [],
    params: [],
    states: [],
    controls: new Map(),
  }
}

/** Drop the records at or past `step` (a rewind); a new array when anything goes. */
function rewound<T extends { step: number }>(records: T[], step: number): T[] {
  let keep = records.length
  while (keep > 0 && (records[keep - 1]?.step ?? -1) >= step) keep--
  return keep === records.length ? records : records.slice(0, keep)
}

function addTrain(data: RunData, record: TrainRecord): void {
  data.train.push(record)
  data.branchTrain = rewound(data.branchTrain, record.step)
  data.skipped = rewound(data.skipped, record.step)
  const previous = data.branchTrain[data.branchTrain.length - 1]
  if (previous && record.skipped_steps > previous.skipped_steps) data.skipped.push(record)
  data.branchTrain.push(record)
}

function addEval(data: RunData, record: EvalRecord): void {
  data.eval.push(record)
  data.branchEval = rewound(data.branchEval, record.step)
  data.branchEval.push(record)
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
        addTrain(data, record)
        break
      case 'eval':
        addEval(data, record)
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
