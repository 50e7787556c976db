import { useEffect, useRef } from 'react'
import { StateBadge, type BadgeState } from '../../components/StateBadge'
import { formatCompact, formatDuration, formatInt } from '../../lib/format'
import type { ControlRecord, RunInfo } from '../../types/protocol'
import { Controls } from '../controls/Controls'

export interface TopBarProps {
  run: RunInfo | null
  runName: string
  state: BadgeState
  stateDetail: string
  step: number | null
  maxSteps: number | null
  tokensSeen: number | null
  eta: number | null
  token: string | null
  controls: ReadonlyMap<string, ControlRecord>
  offReason: string | null
  railOpen: boolean
  onToggleRail: () => void
}

export function TopBar(props: TopBarProps) {
  const { run, runName, state, stateDetail, step, maxSteps, tokensSeen, eta, railOpen, onToggleRail } = props
  const progress = step !== null && maxSteps ? Math.min(1, step / maxSteps) : null
  const barRef = useStickyHeight()
  const etaText = etaLabel(state, eta)
  return (
    <header className="topbar" ref={barRef}>
      <div className="topbar-main">
        <button
          type="button"
          className="rail-toggle"
          aria-expanded={railOpen}
          aria-controls="runs-rail"
          onClick={onToggleRail}
        >
          <span aria-hidden="true">☰</span> Runs
        </button>
        <div className="run-title" title={run ? `${run.run_dir} (${run.run_id})` : undefined}>
          <span className="run-name" data-testid="run-name">
            {runName || 'no run yet'}
          </span>
          {run && run.run_id !== runName ? <span className="run-id">{run.run_id}</span> : null}
        </div>
        {runName ? <StateBadge state={state} detail={stateDetail} /> : null}
        {stateDetail && (state === 'finished' || state === 'stopped' || state === 'crashed') ? (
          <span className="state-detail" data-testid="state-detail">
            {stateDetail}
          </span>
        ) : null}
        {run ? (
          <>
            <div className="step-block">
              <span className="step-text">
                step{' '}
                <strong data-testid="step-counter" data-step={step ?? ''}>
                  {formatInt(step)}
                </strong>
                {maxSteps ? <span className="step-max"> / {formatInt(maxSteps)}</span> : null}
              </span>
              <span
                className="progress"
                role="progressbar"
                aria-label="training progress"
                aria-valuemin={0}
                aria-valuemax={maxSteps ?? 0}
                aria-valuenow={step ?? 0}
              >
                <span className="progress-fill" style={{ width: `${String((progress ?? 0) * 100)}%` }} />
              </span>
            </div>
            <span className="meta tokens" title="training tokens seen, all ranks">
              {formatCompact(tokensSeen)} tokens
            </span>
            <span className="meta eta" data-testid="eta">
              ETA {etaText}
            </span>
          </>
        ) : null}
      </div>
      {run ? (
        <Controls
          key={run.run_id}
          run={run}
          runName={runName}
          step={step}
          token={props.token}
          controls={props.controls}
          offReason={props.offReason}
        />
      ) : null}
    </header>
  )
}

/** Publish the bar's height as --topbar-h (it wraps on narrow screens), for what sticks below it. */
function useStickyHeight() {
  const ref = useRef<HTMLElement>(null)
  useEffect(() => {
    const bar = ref.current
    if (!bar || typeof ResizeObserver === 'undefined') return undefined
    const observer = new ResizeObserver(() => {
      document.documentElement.style.setProperty('--topbar-h', `${String(bar.offsetHeight)}px`)
    })
    observer.observe(bar)
    return () => {
      observer.disconnect()
    }
  }, [])
  return ref
}

/** ETA at the recent pace; none for a run that is not going to reach its last step by itself. */
export function etaLabel(state: BadgeState, eta: number | null): string {
  if (state === 'paused') return 'paused'
  if (state === 'finished' || eta === 0) return 'done'
  if (state === 'stopped' || state === 'crashed' || eta === null) return '—'
  return formatDuration(eta)
}
