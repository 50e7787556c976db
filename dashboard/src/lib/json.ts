// Python's json module writes NaN, Infinity and -Infinity as bare words, which JSON.parse refuses. If a
// message has them, read them as the strings "NaN", "Infinity", "-Infinity" (the charts draw those as
// markers) rather than losing the whole message.
const BARE_NON_FINITE = /([[,:]\s*)(-?Infinity|NaN)(?=\s*[,\]}])/g

export function parseJsonLenient(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error
    return JSON.parse(text.replace(BARE_NON_FINITE, '$1"$2"')) as unknown
  }
}

/** A finite number, or null for anything else (NaN, ±Inf, null, the strings above). */
export function finiteOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

export type NonFiniteKind = 'nan' | 'inf' | '-inf'

/** How a value that is not a finite number should be marked (null on the wire is a NaN pydantic wrote). */
export function nonFiniteKind(value: unknown): NonFiniteKind | null {
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return null
    if (Number.isNaN(value)) return 'nan'
    return value > 0 ? 'inf' : '-inf'
  }
  if (value === 'Infinity' || value === 'inf') return 'inf'
  if (value === '-Infinity' || value === '-inf') return '-inf'
  return 'nan'
}
