import { stateDotClass } from '../../components/StateBadge'
import { formatValue } from '../../lib/format'
import type { RunInfo } from '../../types/protocol'
import { runName } from './useRuns'

export interface RunsRailProps {
  runs: readonly RunInfo[]
  selected: string | null
  overlay: ReadonlySet<string>
  colorOf: (runId: string) => string
  open: boolean
  onSelect: (runId: string) => void
  onToggleOverlay: (runId: string) => void
  onClose: () => void
}

export function RunsRail({
  runs,
  selected,
  overlay,
  colorOf,
  open,
  onSelect,
  onToggleOverlay,
  onClose,
}: RunsRailProps) {
  return (
    <>
      {open ? <div className="rail-backdrop" aria-hidden="true" onClick={onClose} /> : null}
      <nav id="runs-rail" className={`rail${open ? ' rail-open' : ''}`} aria-label="Runs" hidden={!open}>
        <div className="rail-head">
          <h2>Runs</h2>
          <button type="button" className="link-button rail-close" onClick={onClose}>
            Hide
          </button>
        </div>
        {runs.length === 0 ? <p className="rail-empty">No runs found yet.</p> : null}
        <p className="rail-hint">Tick runs to overlay them on the charts.</p>
        <ul className="run-list" data-testid="run-list">
          {runs.map((run) => {
            const isSelected = run.run_id === selected
            const name = runName(run)
            return (
              <li key={run.run_id} className={`run-item${isSelected ? ' run-item-selected' : ''}`}>
                <input
                  type="checkbox"
                  className="overlay-check"
                  id={`overlay-${run.run_id}`}
                  checked={isSelected || overlay.has(run.run_id)}
                  disabled={isSelected}
                  style={{ accentColor: colorOf(run.run_id) }}
                  aria-label={isSelected ? `${name} is shown` : `Overlay ${name} on the charts`}
                  title={isSelected ? 'the selected run is always shown' : 'overlay on the charts'}
                  onChange={() => {
                    onToggleOverlay(run.run_id)
                  }}
                />
                <button
                  type="button"
                  className="run-select"
                  aria-current={isSelected ? 'true' : undefined}
                  data-testid={`run-${run.run_id}`}
                  onClick={() => {
                    onSelect(run.run_id)
                  }}
                >
                  <span className="run-swatch" style={{ background: colorOf(run.run_id) }} aria-hidden="true" />
                  <span className="run-text">
                    <span className="run-item-name">{name}</span>
                    <span className="run-item-meta">
                      <span className={stateDotClass(run.state)} aria-hidden="true" />
                      {run.state}
                      {run.val_loss !== null ? <> · val {formatValue(run.val_loss)}</> : null}
                    </span>
                  </span>
                </button>
              </li>
            )
          })}
        </ul>
      </nav>
    </>
  )
}
