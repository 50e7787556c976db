import { useEffect, useRef } from 'react'

export interface StopDialogProps {
  runName: string
  runId: string
  step: string
  onCancel: () => void
  onConfirm: () => void
}

/** Asks before Stop, naming the run and the step; Escape or "Keep training" cancels. */
export function StopDialog({ runName, runId, step, onCancel, onConfirm }: StopDialogProps) {
  const cancelRef = useRef<HTMLButtonElement>(null)
  useEffect(() => {
    const previous = document.activeElement
    cancelRef.current?.focus()
    const onKey = (event: KeyboardEvent): void => {
      if (event.key === 'Escape') onCancel()
    }
    document.addEventListener('keydown', onKey)
    return () => {
      document.removeEventListener('keydown', onKey)
      if (previous instanceof HTMLElement) previous.focus()
    }
  }, [onCancel])
  const sameName = runName === runId
  return (
    <div className="modal-backdrop" onClick={onCancel}>
      <div
        className="modal"
        role="alertdialog"
        aria-modal="true"
        aria-labelledby="stop-title"
        aria-describedby="stop-text"
        data-testid="stop-dialog"
        onClick={(event) => {
          event.stopPropagation()
        }}
      >
        <h2 id="stop-title">Stop {runName}?</h2>
        <p id="stop-text">
          Run <strong>{runName}</strong>
          {sameName ? null : <> ({runId})</>} is at step <strong>{step}</strong>. Stop saves a complete checkpoint, then
          every rank exits. It can be resumed later from that checkpoint.
        </p>
        <div className="modal-actions">
          <button type="button" ref={cancelRef} className="control" data-testid="stop-cancel" onClick={onCancel}>
            Keep training
          </button>
          <button type="button" className="control control-danger-solid" data-testid="stop-confirm" onClick={onConfirm}>
            Stop run
          </button>
        </div>
      </div>
    </div>
  )
}
