export interface BigNumberProps {
  label: string
  value: string
  unit?: string
  testId?: string
  /** a smaller figure beside it (e.g. the step it was taken at) */
  note?: string
  size?: 'large' | 'medium'
}

export function BigNumber({ label, value, unit, testId, note, size = 'large' }: BigNumberProps) {
  return (
    <div className={`big big-${size}`}>
      <div className="big-line">
        <span className="big-value" data-testid={testId}>
          {value}
        </span>
        {unit ? <span className="big-unit">{unit}</span> : null}
      </div>
      <div className="big-label">
        {label}
        {note ? <span className="big-note"> · {note}</span> : null}
      </div>
    </div>
  )
}
