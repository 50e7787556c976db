// The sidecar protocol (docs/dashboard.md, "The protocol"), written by hand around the record types that
// schema.ts generates from the Python schema. Records always carry `type` on the wire (pydantic writes
// defaults), so the union below makes it required and discriminates on it.
import type { ControlEvent, EvalEvent, ParamsEvent, RunStateEvent, SystemEvent, TrainEvent } from './schema'

export type TrainRecord = TrainEvent & { type: 'train' }
export type EvalRecord = EvalEvent & { type: 'eval' }
export type RunStateRecord = RunStateEvent & { type: 'run_state' }
export type SystemRecord = SystemEvent & { type: 'system' }
export type ParamsRecord = ParamsEvent & { type: 'params' }
export type ControlRecord = ControlEvent & { type: 'control' }
export type MetricRecord = TrainRecord | EvalRecord | RunStateRecord | SystemRecord | ParamsRecord | ControlRecord

export type ControlAction = ControlEvent['action']

/** A run's state as the sidecar summarises it (RUNINFO.state). */
export type RunState = 'running' | 'paused' | 'saving' | 'stopped' | 'finished' | 'crashed' | 'unknown'

/** RUNINFO: a run's summary, from GET /api/runs and the socket's `run` message. */
export interface RunInfo {
  run_id: string
  run_dir: string
  state: RunState
  step: number | null
  max_steps: number | null
  tokens_seen: number | null
  last_loss: number | null
  val_loss: number | null
  started: number | null
  updated: number | null
  live: boolean
}

// Browser socket: GET /ws/dashboard?run=ID&since=SEQ&epoch=E, messages from the sidecar.
export interface HelloMessage {
  kind: 'hello'
  epoch: string
  run_id: string
  live: boolean
}
export interface RecordsMessage {
  kind: 'records'
  epoch: string
  records: MetricRecord[]
}
export interface ResetMessage {
  kind: 'reset'
  epoch: string
}
export interface RunMessage {
  kind: 'run'
  epoch: string
  run: RunInfo
}
export interface PongMessage {
  kind: 'pong'
}
export type ServerMessage = HelloMessage | RecordsMessage | ResetMessage | RunMessage | PongMessage

// HTTP API
export interface HealthResponse {
  ok: boolean
  epoch: string
  runs: number
}
export interface RunsResponse {
  epoch: string
  runs: RunInfo[]
}
export interface MetricsResponse {
  epoch: string
  records: MetricRecord[]
}
export interface ControlRequest {
  action: ControlAction
  lr_scale?: number
}
export interface ControlAccepted {
  id: string
  status: 'pending'
}

/** x-axis of a series: GET /api/runs/ID/series?x=... */
export type SeriesX = 'step' | 'tokens_seen' | 'time'

/** One bucket of GET /api/runs/ID/series (with "raw": true, one point: min = max = last). */
export interface SeriesBucketWire {
  x: number
  min?: number
  max?: number
  last?: number
  y?: number
  smoothed?: number
}
export interface SeriesMarkerWire {
  x: number
  kind?: string
  value?: unknown
}
/** GET /api/runs/ID/series: the bucketed view (`buckets` is tolerated for `points`). */
export interface SeriesResponse {
  epoch?: string
  run_id?: string
  key?: string
  x?: SeriesX
  smoothing?: number
  raw?: boolean
  /** finite points in the range */
  count?: number
  x_min?: number | null
  x_max?: number | null
  points?: SeriesBucketWire[]
  buckets?: SeriesBucketWire[] | number
  markers?: SeriesMarkerWire[]
}
