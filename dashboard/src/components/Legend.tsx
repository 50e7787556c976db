// A legend in HTML (readable, wraps on a phone): a swatch and a text label for each entry.
export interface LegendEntry {
  label: string
  color: string
  /** how the swatch looks: a line, a dashed line with a dot, a faint band, a marker shape */
  kind: 'line' | 'faint' | 'dashed' | 'band' | 'cross' | 'triangle' | 'diamond'
}

export function Legend({ entries }: { entries: readonly LegendEntry[] }) {
  if (entries.length === 0) return null
  return (
    <ul className="legend">
      {entries.map((entry) => (
        <li key={`${entry.label}-${entry.kind}`}>
          <span className={`swatch swatch-${entry.kind}`} style={{ color: entry.color }} aria-hidden="true" />
          {entry.label}
        </li>
      ))}
    </ul>
  )
}
