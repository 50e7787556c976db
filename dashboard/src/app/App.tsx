// The page: top bar (state, progress, controls), the runs rail, and the grid of cards for the selected
// run (followed live over the socket) with any ticked runs overlaid.
import { useCallback, useMemo, useState } from 'react'
import { DisconnectedBanner, ReloadingBanner, UnreachableBanner } from '../components/Banners'
import { EmptyState } from '../components/EmptyState'
import { Fp16Card } from '../features/charts/Fp16Card'
import { HardwareCard } from '../features/charts/HardwareCard'
import { LossCard } from '../features/charts/LossCard'
import { LrCard } from '../features/charts/LrCard'
import { ThroughputCard } from '../features/charts/ThroughputCard'
import type { ChartRun } from '../features/charts/chartRuns'
import { ModelCard } from '../features/model/ModelCard'
import { RunsRail } from '../features/runs/RunsRail'
import { colorIndexes, newestFirst, runName, useRuns } from '../features/runs/useRuns'
import { lastOf, type RunData } from '../features/stream/runData'
import type { StreamStatus } from '../features/stream/RunStream'
import { useLiveRun } from '../features/stream/useLiveRun'
import { badgeState, controlsOffReason, etaSeconds, stateDetail, stateFromRecords } from '../features/topbar/runStatus'
import { TopBar } from '../features/topbar/TopBar'
import { runColor } from '../lib/palette'
import { takeTokenFromUrl } from '../lib/token'
import type { RunInfo } from '../types/protocol'

function initialRun(): string | null {
  return new URLSearchParams(window.location.search).get('run')
}

function initialRailOpen(): boolean {
  const stored = window.localStorage.getItem('llm-dashboard-rail')
  if (stored) return stored === 'open'
  return window.innerWidth >= 900
}

/** The fresher of the runs list's summary and the socket's `run` message. */
function freshest(a: RunInfo | null | undefined, b: RunInfo | null | undefined): RunInfo | null {
  if (!a) return b ?? null
  if (!b) return a
  return (b.updated ?? 0) > (a.updated ?? 0) ? b : a
}

/** A summary from the records alone, while the runs list has not named this run. */
function infoFromRecords(runId: string, data: RunData, status: StreamStatus): RunInfo {
  const train = lastOf(data.train)
  return {
    run_id: runId,
    run_dir: runId,
    state: stateFromRecords(data.states),
    step: train?.step ?? null,
    max_steps: null,
    tokens_seen: train?.tokens_seen ?? null,
    last_loss: train?.loss ?? null,
    val_loss: lastOf(data.eval)?.val_loss ?? null,
    started: data.train[0]?.time ?? null,
    updated: train?.time ?? null,
    live: status.live ?? false,
  }
}

export function App() {
  const [token] = useState(() => takeTokenFromUrl(window.location, window.history, window.sessionStorage))
  const runsState = useRuns()
  const runs = useMemo(() => newestFirst(runsState.runs), [runsState.runs])
  const [chosen, setChosen] = useState<string | null>(initialRun)
  const selected = chosen ?? runs[0]?.run_id ?? null
  const [overlay, setOverlay] = useState<ReadonlySet<string>>(() => new Set())
  const [railOpen, setRailOpen] = useState(initialRailOpen)
  const { snapshot, live } = useLiveRun(selected)
  const { data, status } = snapshot
  const dataVersion = data.version

  const select = useCallback((runId: string) => {
    setChosen(runId)
    const url = new URL(window.location.href)
    url.searchParams.set('run', runId)
    window.history.replaceState(window.history.state, '', url)
    if (window.innerWidth < 900) setRailOpen(false)
  }, [])
  const toggleRail = useCallback((open: boolean) => {
    setRailOpen(open)
    window.localStorage.setItem('llm-dashboard-rail', open ? 'open' : 'closed')
  }, [])
  const toggleOverlay = useCallback((runId: string) => {
    setOverlay((prev) => {
      const next = new Set(prev)
      if (next.has(runId)) next.delete(runId)
      else next.add(runId)
      return next
    })
  }, [])

  const listed = runs.find((run) => run.run_id === selected)
  const streamed = snapshot.run?.run_id === selected ? snapshot.run : null
  const info =
    freshest(listed, streamed) ??
    (selected !== null && data.runId === selected && data.lastSeq >= 0 ? infoFromRecords(selected, data, status) : null)

  // the rail shows the followed run's summary as its socket last said it (the list is polled)
  const railRuns = useMemo(
    () => (info ? runs.map((run) => (run.run_id === info.run_id ? info : run)) : runs),
    [runs, info],
  )
  const colors = useMemo(() => colorIndexes(runs), [runs])
  const colorOf = useCallback((runId: string) => runColor(colors.get(runId) ?? 0), [colors])

  const primary = useMemo<ChartRun | null>(
    () =>
      info?.run_id === data.runId
        ? { info, name: runName(info), color: colorOf(info.run_id), local: data, version: dataVersion }
        : null,
    // the summary's fields that matter, and the records' version
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [info?.run_id, info?.live, info?.started, info?.updated, info?.state, dataVersion, colorOf, data],
  )
  const chartRuns = useMemo<ChartRun[]>(() => {
    const overlays = runs
      .filter((run) => overlay.has(run.run_id) && run.run_id !== selected)
      .map((run) => ({ info: run, name: runName(run), color: colorOf(run.run_id), local: null, version: 0 }))
    return primary ? [primary, ...overlays] : overlays
  }, [primary, runs, overlay, selected, colorOf])

  const lastTrain = lastOf(data.train)
  const state = badgeState(info, data.states, status)
  const detail = stateDetail(state, data.states, info)
  const step = lastTrain?.step ?? info?.step ?? null
  const maxSteps = info?.max_steps ?? null
  const empty = runsState.loaded && runs.length === 0 && data.lastSeq < 0

  return (
    <div className="app" data-testid="app" data-run={selected ?? ''} data-last-seq={data.lastSeq}>
      <TopBar
        run={info}
        runName={info ? runName(info) : (selected ?? '')}
        state={state}
        stateDetail={detail}
        step={step}
        maxSteps={maxSteps}
        tokensSeen={lastTrain?.tokens_seen ?? info?.tokens_seen ?? null}
        eta={etaSeconds(data.train, maxSteps)}
        token={token}
        controls={data.controls}
        offReason={controlsOffReason(state, info, status.live)}
        railOpen={railOpen}
        onToggleRail={() => {
          toggleRail(!railOpen)
        }}
      />
      <div className="layout">
        <RunsRail
          runs={railRuns}
          selected={selected}
          overlay={overlay}
          colorOf={colorOf}
          open={railOpen}
          onSelect={select}
          onToggleOverlay={toggleOverlay}
          onClose={() => {
            toggleRail(false)
          }}
        />
        <main className={`main${state === 'disconnected' ? ' stale' : ''}`}>
          {status.everConnected && !status.connected ? (
            <DisconnectedBanner status={status} onRetry={() => live?.reconnectNow()} />
          ) : null}
          {runsState.error && !status.connected && !status.everConnected ? (
            <UnreachableBanner error={runsState.error} />
          ) : null}
          {status.reloading ? <ReloadingBanner /> : null}
          {empty ? (
            <EmptyState />
          ) : (
            <div className="grid">
              <LossCard runs={chartRuns} />
              <ThroughputCard runs={chartRuns} />
              <LrCard runs={chartRuns} />
              <HardwareCard run={primary} />
              <Fp16Card runs={chartRuns} />
              <ModelCard run={primary} />
            </div>
          )}
        </main>
      </div>
    </div>
  )
}
