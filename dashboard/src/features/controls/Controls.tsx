// Pause, Resume, Save now, a new learning-rate multiplier, and Stop (set apart, confirmed). Each shows
// its latest command's status beside the controls: sending, pending, applied at step N, or why not.
import { useReducer, useState, type ReactNode } from 'react'
import { postControl, type ControlResult } from '../../lib/api'
import { formatInt } from '../../lib/format'
import type { ControlAction, ControlRecord, ControlRequest, RunInfo } from '../../types/protocol'
import { commandView, NO_TOKEN_MESSAGE, parseLrScale, reduceCommands, type CommandView } from './controlState'
import { StopDialog } from './StopDialog'

export interface ControlsProps {
  run: RunInfo | null
  /** the run's name as the top bar shows it */
  runName: string
  step: number | null
  token: string | null
  controls: ReadonlyMap<string, ControlRecord>
  /** why every control is off (run ended, not live), or null */
  offReason: string | null
  post?: (runId: string, body: ControlRequest, token: string) => Promise<ControlResult>
}

const ORDER: ControlAction[] = ['pause', 'resume', 'save', 'set_lr', 'stop']
const NAMES: Record<ControlAction, string> = {
  pause: 'Pause',
  resume: 'Resume',
  save: 'Save',
  set_lr: 'LR',
  stop: 'Stop',
}

export function Controls({ run, runName, step, token, controls, offReason, post = postControl }: ControlsProps) {
  const [local, dispatch] = useReducer(reduceCommands, {})
  const [lrText, setLrText] = useState('1.0')
  const [lrError, setLrError] = useState<string | null>(null)
  const [confirming, setConfirming] = useState(false)

  const views = new Map<ControlAction, CommandView>()
  for (const action of ORDER) {
    const view = commandView(action, local[action], controls)
    if (view) views.set(action, view)
  }
  const busy = (action: ControlAction): boolean => {
    const phase = views.get(action)?.phase
    return phase === 'sending' || phase === 'pending'
  }

  const send = (action: ControlAction, lrScale?: number): void => {
    if (!run) return
    dispatch({ type: 'send', action, ...(lrScale !== undefined ? { lrScale } : {}) })
    if (!token) {
      dispatch({ type: 'failed', action, message: NO_TOKEN_MESSAGE })
      return
    }
    const body: ControlRequest = lrScale !== undefined ? { action, lr_scale: lrScale } : { action }
    void post(run.run_id, body, token).then((result) => {
      if (result.ok) dispatch({ type: 'accepted', action, id: result.id })
      else dispatch({ type: 'failed', action, message: result.message })
    })
  }

  const paused = run?.state === 'paused'
  const reason = (action: ControlAction): string | null => {
    if (offReason) return offReason
    if (busy(action)) return 'waiting for the run to acknowledge the last one'
    if (action === 'pause' && paused) return 'already paused'
    if (action === 'resume' && !paused) return 'not paused'
    return null
  }

  const submitLr = (): void => {
    const parsed = parseLrScale(lrText)
    if (!parsed.ok) {
      setLrError(parsed.message)
      return
    }
    setLrError(null)
    send('set_lr', parsed.value)
  }

  const statuses = ORDER.flatMap((action) => {
    const view = views.get(action)
    return view ? [view] : []
  })

  return (
    <div className="controls" role="group" aria-label="Run controls">
      <div className="controls-row">
        <ControlButton
          action="pause"
          reason={reason('pause')}
          onClick={() => {
            send('pause')
          }}
        />
        <ControlButton
          action="resume"
          reason={reason('resume')}
          onClick={() => {
            send('resume')
          }}
        />
        <ControlButton
          action="save"
          reason={reason('save')}
          onClick={() => {
            send('save')
          }}
        >
          Save now
        </ControlButton>
        <form
          className="lr-form"
          noValidate
          onSubmit={(event) => {
            event.preventDefault()
            if (!reason('set_lr')) submitLr()
          }}
        >
          <label htmlFor="lr-scale" className="lr-label">
            LR ×
          </label>
          <input
            id="lr-scale"
            data-testid="lr-scale-input"
            type="number"
            inputMode="decimal"
            step="0.1"
            value={lrText}
            aria-invalid={lrError ? true : undefined}
            aria-describedby={lrError ? 'lr-scale-error' : undefined}
            onChange={(event) => {
              setLrText(event.target.value)
              setLrError(null)
            }}
          />
          <ControlButton action="set_lr" reason={reason('set_lr')} submit>
            Set LR
          </ControlButton>
        </form>
        <span className="controls-gap" aria-hidden="true" />
        <ControlButton
          action="stop"
          reason={reason('stop')}
          danger
          onClick={() => {
            setConfirming(true)
          }}
        >
          Stop…
        </ControlButton>
      </div>
      {statuses.length > 0 || lrError || offReason ? (
        <div className="controls-status" aria-live="polite">
          {offReason ? <span className="controls-off">{offReason}</span> : null}
          {lrError ? (
            <span id="lr-scale-error" className="status status-error" data-testid="lr-scale-error">
              LR: {lrError}
            </span>
          ) : null}
          {statuses.map((view) => (
            <span
              key={view.action}
              className={`status status-${view.phase}`}
              data-testid={`control-status-${view.action}`}
              data-phase={view.phase}
            >
              {NAMES[view.action]}: {view.text}
            </span>
          ))}
        </div>
      ) : null}
      {confirming && run ? (
        <StopDialog
          runName={runName}
          runId={run.run_id}
          step={step === null ? '—' : formatInt(step)}
          onCancel={() => {
            setConfirming(false)
          }}
          onConfirm={() => {
            setConfirming(false)
            send('stop')
          }}
        />
      ) : null}
    </div>
  )
}

interface ControlButtonProps {
  action: ControlAction
  reason: string | null
  onClick?: () => void
  danger?: boolean
  submit?: boolean
  children?: ReactNode
}

/** Off buttons stay focusable (aria-disabled) so the reason can be read on hover and by keyboard. */
function ControlButton({ action, reason, onClick, danger, submit, children }: ControlButtonProps) {
  return (
    <button
      type={submit ? 'submit' : 'button'}
      className={`control${danger ? ' control-danger' : ''}`}
      data-testid={`control-${action.replace('_', '-')}`}
      aria-disabled={reason ? true : undefined}
      title={reason ?? undefined}
      onClick={(event) => {
        if (reason) {
          event.preventDefault()
          return
        }
        onClick?.()
      }}
    >
      {children ?? NAMES[action]}
    </button>
  )
}
