// The runs list (GET /api/runs), polled while the page is open.
import { useEffect, useState } from 'react'
import { getRuns } from '../../lib/api'
import type { RunInfo } from '../../types/protocol'

export interface RunsState {
  runs: RunInfo[]
  loaded: boolean
  /** the last request failed (the sidecar is unreachable) */
  error: string | null
}

export const RUNS_POLL_MS = 5000

export function useRuns(pollMs = RUNS_POLL_MS): RunsState {
  const [state, setState] = useState<RunsState>({ runs: [], loaded: false, error: null })
  useEffect(() => {
    let stopped = false
    let timer: ReturnType<typeof setTimeout> | null = null
    let controller: AbortController | null = null
    const poll = (): void => {
      controller = new AbortController()
      getRuns(controller.signal)
        .then((body) => {
          if (!stopped) setState({ runs: body.runs, loaded: true, error: null })
        })
        .catch((e: unknown) => {
          if (!stopped) setState((s) => ({ ...s, error: e instanceof Error ? e.message : String(e) }))
        })
        .finally(() => {
          if (!stopped) timer = setTimeout(poll, pollMs)
        })
    }
    poll()
    return () => {
      stopped = true
      if (timer !== null) clearTimeout(timer)
      controller?.abort()
    }
  }, [pollMs])
  return state
}

/** A run's colour index: its place in start order (stable as newer runs appear). */
export function colorIndexes(runs: readonly RunInfo[]): Map<string, number> {
  const ordered = [...runs].sort(
    (a, b) => (a.started ?? Infinity) - (b.started ?? Infinity) || a.run_id.localeCompare(b.run_id),
  )
  return new Map(ordered.map((run, i) => [run.run_id, i]))
}

/** Newest first, as the sidecar sends them; sorted here too in case. */
export function newestFirst(runs: readonly RunInfo[]): RunInfo[] {
  return [...runs].sort((a, b) => (b.started ?? 0) - (a.started ?? 0))
}

export function runName(run: RunInfo): string {
  const parts = run.run_dir.split(/[\\/]/).filter(Boolean)
  return parts[parts.length - 1] ?? run.run_id
}
