// The bucketed view of one series (GET /api/runs/ID/series, docs/dashboard.md): for each x bucket the
// min, max and last raw value and the smoothed value at its last point; non-finite values and fp16
// skipped steps listed apart as markers. The same algorithm runs here on the records the page holds,
// for the newest points between two requests and when the sidecar's answer is missing.
import { Ema } from '../../lib/ema'
import { finiteOrNull, nonFiniteKind } from '../../lib/json'
import type { SeriesBucketWire, SeriesResponse } from '../../types/protocol'

export interface SeriesPoint {
  x: number
  min: number
  max: number
  last: number
  smoothed: number
}

export type MarkerKind = 'nan' | 'inf' | '-inf' | 'skipped'

export interface SeriesMarker {
  x: number
  kind: MarkerKind
}

export interface SeriesView {
  /** one point per raw value (no buckets): min = max = last */
  raw: boolean
  points: SeriesPoint[]
  markers: SeriesMarker[]
  /** finite values in the range (the sidecar's `count`), when known */
  count?: number
}

export const EMPTY_VIEW: SeriesView = { raw: true, points: [], markers: [] }

export const DEFAULT_BUCKETS = 1500

/** Read the sidecar's answer, tolerating the spellings a bucket or a raw point may take. */
export function normaliseSeries(response: SeriesResponse): SeriesView {
  // `buckets` is the bucket count in the sidecar's answer; a list under that name is read as points
  const items: SeriesBucketWire[] = Array.isArray(response.points)
    ? response.points
    : Array.isArray(response.buckets)
      ? response.buckets
      : []
  const points: SeriesPoint[] = []
  for (const item of items) {
    const x = finiteOrNull(item.x)
    const last = finiteOrNull(item.last ?? item.y)
    if (x === null || last === null) continue
    const min = finiteOrNull(item.min) ?? last
    const max = finiteOrNull(item.max) ?? last
    const smoothed = finiteOrNull(item.smoothed) ?? Number.NaN
    points.push({ x, min, max, last, smoothed })
  }
  points.sort((a, b) => a.x - b.x)
  const markers: SeriesMarker[] = []
  for (const marker of response.markers ?? []) {
    const x = finiteOrNull(marker.x)
    if (x === null) continue
    markers.push({ x, kind: markerKind(marker.kind, marker.value) })
  }
  const count = finiteOrNull(response.count)
  return { raw: response.raw ?? false, points, markers: sortMarkers(markers), ...(count !== null ? { count } : {}) }
}

function markerKind(kind: string | undefined, value: unknown): MarkerKind {
  const k = (kind ?? '').toLowerCase()
  if (k.includes('skip')) return 'skipped'
  if (k === 'nan') return 'nan'
  if (k === 'inf' || k === '+inf' || k === 'infinity') return 'inf'
  if (k === '-inf' || k === '-infinity') return '-inf'
  return nonFiniteKind(value) ?? 'nan'
}

function sortMarkers(markers: SeriesMarker[]): SeriesMarker[] {
  return markers.sort((a, b) => a.x - b.x || a.kind.localeCompare(b.kind))
}

/**
 * A series the page holds, read in place (no copies: a run can have 100,000 points and every card
 * reads its own series a few times a second). x ascending.
 */
export interface LocalSeries {
  length: number
  x(i: number): number
  /** the raw value (null, NaN, ±Inf, "NaN" are markers) */
  value(i: number): unknown
  /** x of fp16 skipped steps */
  skipped?: readonly number[]
}

export function arraySeries(
  xs: readonly number[],
  values: readonly unknown[],
  skipped?: readonly number[],
): LocalSeries {
  return {
    length: xs.length,
    x: (i) => xs[i] ?? Number.NaN,
    value: (i) => values[i],
    ...(skipped ? { skipped } : {}),
  }
}

export interface BucketOptions {
  buckets?: number
  smoothing: number
  xMin?: number | undefined
  xMax?: number | undefined
}

/**
 * What the sidecar computes, on points held here: smooth the whole series, then split [xMin, xMax]
 * into equal buckets; raw points when the range holds no more than `buckets`. The newest point in the
 * range is always the `last` of the final bucket.
 */
export function bucketLocally(series: LocalSeries, options: BucketOptions): SeriesView {
  const n = Math.max(1, Math.floor(options.buckets ?? DEFAULT_BUCKETS))
  const lo = options.xMin ?? -Infinity
  const hi = options.xMax ?? Infinity
  const ema = new Ema(options.smoothing)
  // one pass: smoothed value and range membership of every point
  const smoothed = new Float64Array(series.length)
  const inRange: number[] = []
  const markers: SeriesMarker[] = []
  for (let i = 0; i < series.length; i++) {
    const v = series.value(i)
    smoothed[i] = ema.push(v)
    const x = series.x(i)
    if (x < lo || x > hi) continue
    const kind = nonFiniteKind(v)
    if (kind) markers.push({ x, kind })
    else inRange.push(i)
  }
  for (const x of series.skipped ?? []) if (x >= lo && x <= hi) markers.push({ x, kind: 'skipped' })
  const pointAt = (i: number): SeriesPoint => {
    const v = series.value(i) as number
    return { x: series.x(i), min: v, max: v, last: v, smoothed: smoothed[i] ?? Number.NaN }
  }
  const count = inRange.length
  if (count <= n) return { raw: true, points: inRange.map(pointAt), markers: sortMarkers(markers), count }

  const x0 = Number.isFinite(lo) ? lo : series.x(inRange[0] ?? 0)
  const x1 = Number.isFinite(hi) ? hi : series.x(inRange[count - 1] ?? 0)
  const width = (x1 - x0) / n
  const points: SeriesPoint[] = []
  let current: SeriesPoint | null = null
  let currentBucket = -1
  for (const i of inRange) {
    const x = series.x(i)
    const v = series.value(i) as number
    const bucket = width > 0 ? Math.min(n - 1, Math.floor((x - x0) / width)) : 0
    if (current === null || bucket !== currentBucket) {
      current = pointAt(i)
      currentBucket = bucket
      points.push(current)
    } else {
      current.x = x
      current.min = Math.min(current.min, v)
      current.max = Math.max(current.max, v)
      current.last = v
      current.smoothed = smoothed[i] ?? Number.NaN
    }
  }
  return { raw: false, points, markers: sortMarkers(markers), count }
}

export function lastX(view: SeriesView): number {
  const p = view.points[view.points.length - 1]?.x ?? -Infinity
  const m = view.markers[view.markers.length - 1]?.x ?? -Infinity
  return Math.max(p, m)
}

/**
 * The raw points (and markers) of `series` after x = `afterX`. Smoothed by carrying on from `from`
 * (the sidecar's last point and how many finite values led to it) when given: work for the new points
 * only. Without it, the whole series is smoothed again.
 */
export function localTail(
  series: LocalSeries,
  afterX: number,
  smoothing: number,
  from?: { smoothed: number; count: number },
): SeriesView {
  let start = series.length
  while (start > 0 && series.x(start - 1) > afterX) start--
  if (start === series.length) return EMPTY_VIEW
  let ema: Ema
  if (from && Number.isFinite(from.smoothed) && from.count > 0) {
    ema = Ema.continuing(smoothing, from.smoothed, from.count)
  } else {
    ema = new Ema(smoothing)
    for (let i = 0; i < start; i++) ema.push(series.value(i))
  }
  const points: SeriesPoint[] = []
  const markers: SeriesMarker[] = []
  for (let i = start; i < series.length; i++) {
    const x = series.x(i)
    const v = series.value(i)
    const smoothed = ema.push(v)
    const kind = nonFiniteKind(v)
    if (kind) markers.push({ x, kind })
    else points.push({ x, min: v as number, max: v as number, last: v as number, smoothed })
  }
  for (const x of series.skipped ?? []) if (x > afterX) markers.push({ x, kind: 'skipped' })
  return { raw: true, points, markers: sortMarkers(markers) }
}

/**
 * The view with the points the page received after it was fetched: those of `local` beyond the view's
 * last x (and their markers) are appended raw, so the newest point is drawn before the next request.
 */
export function withTail(view: SeriesView, local: SeriesView): SeriesView {
  const after = lastX(view)
  const tail = local.points.filter((p) => p.x > after)
  const tailMarkers = local.markers.filter((m) => m.x > after)
  if (tail.length === 0 && tailMarkers.length === 0) return view
  return {
    raw: view.raw,
    points: [...view.points, ...tail],
    markers: [...view.markers, ...tailMarkers],
  }
}

/** Merge marker lists (the sidecar's and the page's own skipped steps), each (x, kind) once. */
export function mergeMarkers(a: readonly SeriesMarker[], b: readonly SeriesMarker[]): SeriesMarker[] {
  const seen = new Set<string>()
  const out: SeriesMarker[] = []
  for (const m of [...a, ...b]) {
    const key = `${String(m.x)}|${m.kind}`
    if (seen.has(key)) continue
    seen.add(key)
    out.push(m)
  }
  return sortMarkers(out)
}

export interface MarkerPoint {
  x: number
  y: number
  kind: MarkerKind
}

/**
 * Where to draw each marker: a non-finite value has no y of its own, so it sits on the line — at the
 * last finite value at or before its x (the first one after, at the very start). Markers with nothing
 * to sit on are left out.
 */
export function placeMarkers(view: SeriesView, useSmoothed: boolean): MarkerPoint[] {
  const pts = view.points
  const out: MarkerPoint[] = []
  let j = 0
  for (const marker of view.markers) {
    while (j < pts.length && (pts[j]?.x ?? Infinity) <= marker.x) j++
    const before = j > 0 ? pts[j - 1] : undefined
    const anchor = before ?? pts[0]
    if (!anchor) continue
    const y = useSmoothed && Number.isFinite(anchor.smoothed) ? anchor.smoothed : anchor.last
    out.push({ x: marker.x, y, kind: marker.kind })
  }
  return out
}

/** x of the steps where the fp16 skipped-step counter grew. */
export function skippedStepXs(xs: readonly number[], skippedCounts: readonly number[]): number[] {
  const out: number[] = []
  for (let i = 1; i < skippedCounts.length; i++) {
    const now = skippedCounts[i]
    const before = skippedCounts[i - 1]
    const x = xs[i]
    if (now !== undefined && before !== undefined && x !== undefined && now > before) out.push(x)
  }
  return out
}
