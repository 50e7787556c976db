// Series for a chart, several at once (one per run and key): the sidecar's bucketed view
// (GET .../series), requested when the query changes (zoom, smoothing, x-axis) and, while a run is live
// and not zoomed, again at most every REFRESH_MS as its records arrive. Between two answers the points
// the page already holds are appended raw, so the newest point is always drawn; when the sidecar cannot
// answer, the page buckets what it holds itself (same algorithm).
import { useEffect, useMemo, useRef, useState } from 'react'
import { getSeries } from '../../lib/api'
import type { SeriesX } from '../../types/protocol'
import {
  bucketLocally,
  DEFAULT_BUCKETS,
  EMPTY_VIEW,
  lastX,
  localTail,
  mergeMarkers,
  normaliseSeries,
  withTail,
  type LocalSeries,
  type SeriesView,
} from './seriesView'

export const REFRESH_MS = 2000
const DEBOUNCE_MS = 100

export interface SeriesRequest {
  runId: string
  key: string
  x: SeriesX
  smoothing: number
  /** zoomed x-range in the series' own x units; null: the whole run */
  range: readonly [number, number] | null
  buckets?: number
  /** the run is still writing records */
  live: boolean
  /** changes when the run has new records (a version, or RUNINFO.updated) */
  refreshToken: number
  /** the run's records as the page holds them (the run followed live), else null */
  local: LocalSeries | null
}

export interface SeriesState {
  view: SeriesView
  source: 'sidecar' | 'page' | 'none'
  error: string | null
}

interface Entry {
  view: SeriesView | null
  error: string | null
  /** when it was requested, and the refresh token then */
  at: number
  token: number
}

export function fetchKey(r: SeriesRequest): string {
  return JSON.stringify([r.runId, r.key, r.x, r.smoothing, r.range, r.buckets ?? DEFAULT_BUCKETS])
}

const baseKey = (r: SeriesRequest): string => JSON.stringify([r.runId, r.key, r.x])

/** The request list's identity for memoisation: everything but `local` (which follows refreshToken). */
export function requestsKey(requests: readonly SeriesRequest[]): string {
  return requests.map((r) => `${fetchKey(r)}#${String(r.live)}#${String(r.refreshToken)}`).join('|')
}

export function useSeriesSet(requests: readonly SeriesRequest[]): SeriesState[] {
  const signature = requestsKey(requests)
  const [entries, setEntries] = useState<ReadonlyMap<string, Entry>>(() => new Map())
  const [tick, setTick] = useState(0)
  const inflight = useRef(new Map<string, AbortController>())
  // the last good view per run/key/x, shown while a new query (zoom, smoothing) is on its way
  const [stale, setStale] = useState<ReadonlyMap<string, SeriesView>>(() => new Map())

  useEffect(() => {
    const wanted = new Set(requests.map(fetchKey))
    for (const [key, controller] of inflight.current) {
      if (!wanted.has(key)) {
        controller.abort()
        inflight.current.delete(key)
      }
    }
    let dueTimer: ReturnType<typeof setTimeout> | null = null
    const timer = setTimeout(() => {
      const now = Date.now()
      let nextDue = Infinity
      for (const request of requests) {
        const key = fetchKey(request)
        if (inflight.current.has(key)) continue
        const entry = entries.get(key)
        if (entry) {
          const refresh = request.live && request.range === null && entry.token !== request.refreshToken
          if (!refresh) continue
          if (now - entry.at < REFRESH_MS) {
            nextDue = Math.min(nextDue, entry.at + REFRESH_MS)
            continue
          }
        }
        start(request, key, now)
      }
      if (Number.isFinite(nextDue)) {
        dueTimer = setTimeout(
          () => {
            setTick((t) => t + 1)
          },
          Math.max(0, nextDue - Date.now()),
        )
      }
    }, DEBOUNCE_MS)

    function start(request: SeriesRequest, key: string, at: number): void {
      const controller = new AbortController()
      inflight.current.set(key, controller)
      const [xMin, xMax] = request.range ?? [undefined, undefined]
      const query = {
        key: request.key,
        x: request.x,
        buckets: request.buckets ?? DEFAULT_BUCKETS,
        smoothing: request.smoothing,
        xMin,
        xMax,
      }
      const token = request.refreshToken
      getSeries(request.runId, query, controller.signal)
        .then((response) => {
          const view = normaliseSeries(response)
          setEntries((prev) => new Map(prev).set(key, { view, error: null, at, token }))
          setStale((prev) => new Map(prev).set(baseKey(request), view))
        })
        .catch((e: unknown) => {
          if (controller.signal.aborted) return
          const error = e instanceof Error ? e.message : String(e)
          setEntries((prev) => new Map(prev).set(key, { view: null, error, at, token }))
        })
        .finally(() => {
          if (inflight.current.get(key) === controller) inflight.current.delete(key)
        })
    }

    return () => {
      clearTimeout(timer)
      if (dueTimer !== null) clearTimeout(dueTimer)
    }
    // `signature` stands for `requests`
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [signature, entries, tick])

  useEffect(() => {
    const controllers = inflight.current
    return () => {
      for (const controller of controllers.values()) controller.abort()
      controllers.clear()
    }
  }, [])

  return useMemo(
    () => requests.map((request) => seriesState(request, entries.get(fetchKey(request)), stale.get(baseKey(request)))),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [signature, entries, stale],
  )
}

/** What to draw for one request, from the sidecar's answer (if any) and the page's own records. */
export function seriesState(
  request: SeriesRequest,
  entry: Entry | undefined,
  stale: SeriesView | undefined,
): SeriesState {
  const error = entry?.error ?? null
  const local = request.local
  if (entry?.view) {
    const fetched = entry.view
    if (!local) return { view: fetched, source: 'sidecar', error }
    // the skipped fp16 steps the page knows of, on every series it marks them on (the loss too)
    const end = lastX(fetched)
    const [lo, hi] = request.range ?? [-Infinity, Infinity]
    const skipped = (local.skipped ?? []).filter((x) => x >= lo && x <= hi && x <= end)
    const view =
      skipped.length > 0
        ? {
            ...fetched,
            markers: mergeMarkers(
              fetched.markers,
              skipped.map((x) => ({ x, kind: 'skipped' as const })),
            ),
          }
        : fetched
    if (request.range !== null) return { view, source: 'sidecar', error }
    // carry the sidecar's smoothing on over the new points (it counted the finite values it smoothed)
    const lastPoint = fetched.points[fetched.points.length - 1]
    const from =
      lastPoint && fetched.count !== undefined ? { smoothed: lastPoint.smoothed, count: fetched.count } : undefined
    return { view: withTail(view, localTail(local, end, request.smoothing, from)), source: 'sidecar', error }
  }
  if (local) {
    const [xMin, xMax] = request.range ?? [undefined, undefined]
    const buckets = request.buckets ?? DEFAULT_BUCKETS
    return { view: bucketLocally(local, { buckets, smoothing: request.smoothing, xMin, xMax }), source: 'page', error }
  }
  if (stale) return { view: stale, source: 'sidecar', error }
  return { view: EMPTY_VIEW, source: 'none', error }
}
