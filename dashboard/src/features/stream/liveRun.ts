// One run followed live: its stream, its records and its summary, behind a subscribe/snapshot pair for
// useSyncExternalStore. Listeners hear at most one change per `throttleMs` (a few redraws a second,
// however fast records arrive).
import { dashboardSocketUrl, getMetrics } from '../../lib/api'
import type { RunInfo } from '../../types/protocol'
import { RunStream, type RunStreamOptions, type StreamStatus } from './RunStream'
import { addRecords, emptyRunData, type RunData } from './runData'

export interface LiveSnapshot {
  data: RunData
  /** bumps with every notified change (data, status or run) */
  version: number
  status: StreamStatus
  run: RunInfo | null
}

export class LiveRun {
  private readonly stream: RunStream
  private readonly data: RunData
  private readonly listeners = new Set<() => void>()
  private readonly throttleMs: number
  private snapshot: LiveSnapshot
  private status: StreamStatus
  private run: RunInfo | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private lastNotified = 0
  /** how long the page took to redraw after the last notification (ms) */
  private redrawCost = 0

  constructor(runId: string, overrides: Partial<RunStreamOptions> = {}, throttleMs = 250) {
    this.data = emptyRunData(runId)
    this.throttleMs = throttleMs
    this.stream = new RunStream({
      runId,
      socketUrl: (since, epoch) => dashboardSocketUrl(window.location, runId, since, epoch),
      loadHistory: (since) => getMetrics(runId, since),
      ...overrides,
      onRecords: (records) => {
        if (addRecords(this.data, records)) this.changed()
      },
      onRun: (run) => {
        this.run = run
        this.changed()
      },
      onStatus: (status) => {
        this.status = status
        this.changed()
      },
    })
    this.status = this.stream.status()
    this.snapshot = this.makeSnapshot()
  }

  start(): void {
    this.stream.start()
  }

  stop(): void {
    this.stream.stop()
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  reconnectNow(): void {
    this.stream.reconnectNow()
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  getSnapshot = (): LiveSnapshot => this.snapshot

  private makeSnapshot(): LiveSnapshot {
    return { data: this.data, version: this.data.version, status: this.status, run: this.run }
  }

  /**
   * Notify at most every throttleMs, and never more often than twice the time the last redraw took
   * (up to 2 s): while a long history streams in, the page redraws less and reads the socket more.
   */
  private changed(): void {
    if (this.timer !== null) return
    const gap = Math.max(this.throttleMs, Math.min(2000, 2 * this.redrawCost))
    const wait = Math.max(0, this.lastNotified + gap - Date.now())
    this.timer = setTimeout(() => {
      this.timer = null
      const start = Date.now()
      this.lastNotified = start
      this.snapshot = { ...this.makeSnapshot(), version: this.snapshot.version + 1 }
      for (const listener of this.listeners) listener()
      // React renders the new snapshot before the next task runs: measure up to then
      setTimeout(() => {
        this.redrawCost = Date.now() - start
      }, 0)
    }, wait)
  }
}
