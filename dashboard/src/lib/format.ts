// Numbers as people read them: thousands separators, units, sensible precision. One locale (en-US) so
// the page reads the same everywhere and tests are deterministic.
const LOCALE = 'en-US'
const integer = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 })

export const DASH = '—'

function isNum(x: number | null | undefined): x is number {
  return typeof x === 'number' && Number.isFinite(x)
}

export function formatInt(x: number | null | undefined): string {
  return isNum(x) ? integer.format(x) : DASH
}

/** Fixed decimals with separators: formatFixed(8829.4, 0) = "8,829". */
export function formatFixed(x: number | null | undefined, digits: number): string {
  if (!isNum(x)) return DASH
  return fixed(digits).format(x)
}

// one formatter per precision: toLocaleString builds a new one on every call (slow on axis ticks)
const fixedFormats = new Map<number, Intl.NumberFormat>()
function fixed(digits: number): Intl.NumberFormat {
  let format = fixedFormats.get(digits)
  if (!format) {
    format = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: digits, maximumFractionDigits: digits })
    fixedFormats.set(digits, format)
  }
  return format
}

/** A loss or norm: three decimals below 100 ("3.852"), fewer above, scientific when tiny. */
export function formatValue(x: number | null | undefined): string {
  if (typeof x === 'number' && !Number.isFinite(x)) return String(x)
  if (!isNum(x)) return DASH
  const a = Math.abs(x)
  if (a !== 0 && a < 1e-3) return formatSci(x)
  if (a >= 1e4) return formatFixed(x, 0)
  if (a >= 100) return formatFixed(x, 1)
  return formatFixed(x, 3)
}

export function formatSci(x: number | null | undefined, digits = 2): string {
  if (!isNum(x)) return DASH
  return x.toExponential(digits)
}

/** A fraction as a percentage: 0.388 → "38.8 %". */
export function formatPercent(fraction: number | null | undefined, digits = 1): string {
  return isNum(fraction) ? `${formatFixed(fraction * 100, digits)} %` : DASH
}

/** Large counts: 1,234 / 12.3 K / 4.56 M / 7.89 B / 1.23 T, then 4.56e+18. */
export function formatCompact(x: number | null | undefined): string {
  if (!isNum(x)) return DASH
  const a = Math.abs(x)
  if (a < 1e4) return formatInt(x)
  if (a < 1e6) return `${formatFixed(x / 1e3, 1)} K`
  if (a < 1e9) return `${formatFixed(x / 1e6, 2)} M`
  if (a < 1e12) return `${formatFixed(x / 1e9, 2)} B`
  if (a < 1e15) return `${formatFixed(x / 1e12, 2)} T`
  return formatSci(x)
}

/** An exact count while it stays readable (65,536), then scientific (1.81e+24). */
export function formatCount(x: number | null | undefined): string {
  if (!isNum(x)) return DASH
  return Math.abs(x) < 1e12 ? formatInt(x) : formatSci(x)
}

/** A duration in seconds: "12 s", "4 min 05 s", "3 h 07 min", "2 d 4 h". */
export function formatDuration(seconds: number | null | undefined): string {
  if (!isNum(seconds) || seconds < 0) return DASH
  const s = Math.round(seconds)
  if (s < 60) return `${String(s)} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${String(m)} min ${String(s % 60).padStart(2, '0')} s`
  const h = Math.floor(m / 60)
  if (h < 48) return `${String(h)} h ${String(m % 60).padStart(2, '0')} min`
  return `${String(Math.floor(h / 24))} d ${String(h % 24)} h`
}

/** A short clock for axis ticks: 0:42, 12:05, 3:07:00. */
export function formatClock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const sec = String(s % 60).padStart(2, '0')
  return h > 0 ? `${String(h)}:${String(m).padStart(2, '0')}:${sec}` : `${String(m)}:${sec}`
}
