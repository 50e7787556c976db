// The run's state, progress and ETA, from its summary (RUNINFO), its records and the socket.
import type { BadgeState } from '../../components/StateBadge'
import type { RunInfo, RunState, RunStateRecord, TrainRecord } from '../../types/protocol'
import type { StreamStatus } from '../stream/RunStream'

const FROM_RECORD: Record<RunStateRecord['state'], RunState> = {
  started: 'running',
  resumed: 'running',
  unpaused: 'running',
  checkpoint_saved: 'running',
  paused: 'paused',
  finished: 'finished',
  stopped: 'stopped',
}

export function stateFromRecords(states: readonly RunStateRecord[]): RunState {
  const last = states[states.length - 1]
  return last ? FROM_RECORD[last.state] : 'unknown'
}

export function badgeState(run: RunInfo | null, states: readonly RunStateRecord[], status: StreamStatus): BadgeState {
  if (status.everConnected && !status.connected) return 'disconnected'
  const state = run?.state ?? stateFromRecords(states)
  if (!status.everConnected && state === 'unknown') return 'connecting'
  return state
}

export const ENDED: ReadonlySet<BadgeState> = new Set<BadgeState>(['finished', 'stopped', 'crashed'])

/** The exit detail the badge shows: the last run_state record's detail, or what crashed means. */
export function stateDetail(state: BadgeState, states: readonly RunStateRecord[], run: RunInfo | null): string {
  const last = states[states.length - 1]
  if (state === 'crashed') {
    return `stopped reporting without a final state${run?.step != null ? ` at step ${String(run.step)}` : ''}`
  }
  if ((state === 'finished' || state === 'stopped') && last) {
    return last.detail
      ? `${last.state} at step ${String(last.step)}: ${last.detail}`
      : `${last.state} at step ${String(last.step)}`
  }
  return last?.detail ?? ''
}

/** Why the controls are off, or null when they can be used. */
/**
 * Why the controls are off, or null. `streamLive` is what the run's socket last said (its hello, then
 * each change): fresher than the polled runs list, which may still say live just after the sidecar
 * restarted and before the trainer has reconnected to it.
 */
export function controlsOffReason(
  state: BadgeState,
  run: RunInfo | null,
  streamLive: boolean | null = null,
): string | null {
  if (!run) return 'no run selected'
  if (ENDED.has(state)) return `controls are off: the run ${state}`
  if (state === 'disconnected') return 'disconnected from the sidecar: controls wait for it'
  if (!(streamLive ?? run.live)) return 'the run is not reporting to this sidecar: controls are off'
  return null
}

/** Seconds left at the recent pace (the last `window` train records), or null when unknown. */
export function etaSeconds(train: readonly TrainRecord[], maxSteps: number | null, window = 20): number | null {
  if (maxSteps === null || train.length < 2) return null
  const last = train[train.length - 1]
  const first = train[Math.max(0, train.length - 1 - window)]
  if (!last || !first || last.step >= maxSteps) return last && last.step >= maxSteps ? 0 : null
  const steps = last.step - first.step
  const seconds = last.time - first.time
  if (steps <= 0 || seconds <= 0) return null
  return ((maxSteps - last.step) * seconds) / steps
}
