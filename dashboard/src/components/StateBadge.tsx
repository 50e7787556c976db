import type { RunState } from '../types/protocol'

export type BadgeState = RunState | 'disconnected' | 'connecting'

const LABEL: Record<BadgeState, string> = {
  running: 'running',
  paused: 'paused',
  saving: 'saving',
  stopped: 'stopped',
  finished: 'finished',
  crashed: 'crashed',
  unknown: 'unknown',
  disconnected: 'disconnected',
  connecting: 'connecting',
}

export function StateBadge({ state, detail }: { state: BadgeState; detail?: string }) {
  return (
    <span
      className={`badge badge-${state}`}
      data-testid="state-badge"
      data-state={state}
      title={detail === '' ? undefined : detail}
    >
      <span className="badge-dot" aria-hidden="true" />
      {LABEL[state]}
    </span>
  )
}

export function stateDotClass(state: RunState): string {
  return `dot dot-${state}`
}
