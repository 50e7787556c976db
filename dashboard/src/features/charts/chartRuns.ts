// The runs a chart draws (the selected one, followed live, plus those ticked for overlay) and their
// series, fetched together.
import { useMemo } from 'react'
import type { RunInfo, SeriesX } from '../../types/protocol'
import { localSeries, type SeriesKey } from '../series/localSeries'
import type { LocalSeries } from '../series/seriesView'
import { useSeriesSet, type SeriesRequest, type SeriesState } from '../series/useSeries'
import type { RunData } from '../stream/runData'

export interface ChartRun {
  info: RunInfo
  name: string
  color: string
  /** the records held for the run followed live; null for an overlaid run */
  local: RunData | null
  /** bumps when `local` changes */
  version: number
}

export interface SeriesSpec {
  key: SeriesKey
  smoothing: number
}

/** Wall time is shown from each run's start, so overlaid runs line up. */
export function xOffset(run: ChartRun, x: SeriesX): number {
  if (x !== 'time') return 0
  return run.info.started ?? run.local?.train[0]?.time ?? 0
}

/** series[runIndex][specIndex] for the runs and keys asked, x-range in display units (null: all). */
export function useRunSeries(
  runs: readonly ChartRun[],
  specs: readonly SeriesSpec[],
  x: SeriesX,
  range: readonly [number, number] | null,
): SeriesState[][] {
  const primary = runs.find((run) => run.local !== null)
  const primaryKey = primary ? `${primary.info.run_id}#${String(primary.version)}` : ''
  const specsKey = specs.map((s) => s.key).join(',')
  const locals = useMemo(() => {
    const map = new Map<SeriesKey, LocalSeries>()
    if (primary?.local) for (const spec of specs) map.set(spec.key, localSeries(primary.local, spec.key, x))
    return map
    // primaryKey stands for the primary run's data version, specsKey for specs
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [primaryKey, specsKey, x])

  const requests: SeriesRequest[] = []
  for (const run of runs) {
    const offset = xOffset(run, x)
    const runRange = range ? ([range[0] + offset, range[1] + offset] as const) : null
    for (const spec of specs) {
      requests.push({
        runId: run.info.run_id,
        key: spec.key,
        x,
        smoothing: spec.smoothing,
        range: runRange,
        live: run.info.live,
        refreshToken: run.local ? run.version : (run.info.updated ?? 0),
        local: run.local ? (locals.get(spec.key) ?? null) : null,
      })
    }
  }
  const states = useSeriesSet(requests)
  return useMemo(() => {
    const out: SeriesState[][] = []
    for (let i = 0; i < runs.length; i++) out.push(states.slice(i * specs.length, (i + 1) * specs.length))
    return out
    // states changes whenever anything drawn does
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [states])
}
