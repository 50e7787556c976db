// The browser's side of GET /ws/dashboard (docs/dashboard.md): connect, replay from the last seq seen,
// reconnect with exponential backoff and jitter, and on `reset` (the sidecar restarted: a new epoch)
// reload the history over HTTP and apply only the records newer than those held. Every record reaches
// onRecords exactly once and in seq order, whatever the socket does.
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from '../../lib/backoff'
import { parseJsonLenient } from '../../lib/json'
import type { MetricRecord, RunInfo, ServerMessage } from '../../types/protocol'

/** The part of the browser's WebSocket this uses (a fake one in tests). */
export interface SocketLike {
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: unknown) => void) | null
  onerror: ((event: unknown) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
}

export interface StreamStatus {
  /** open, and the sidecar said hello */
  connected: boolean
  everConnected: boolean
  /** failed attempts in a row (0 once a hello arrives) */
  attempt: number
  /** when the next attempt starts (ms since the Unix epoch), while waiting to reconnect */
  nextRetryAt: number | null
  /** when the last new record arrived here (ms) */
  lastRecordAt: number | null
  lastSeq: number
  epoch: string | null
  live: boolean | null
  /** reloading history after a `reset` */
  reloading: boolean
}

export interface RunStreamOptions {
  runId: string
  socketUrl: (since: number, epoch: string | null) => string
  /** GET /api/runs/ID/metrics?since=SEQ */
  loadHistory: (since: number) => Promise<MetricRecord[]>
  onRecords: (records: MetricRecord[]) => void
  onRun?: (run: RunInfo) => void
  onStatus?: (status: StreamStatus) => void
  createSocket?: (url: string) => SocketLike
  backoff?: BackoffOptions
  random?: () => number
  now?: () => number
  /** ping this often; a socket silent for staleMs is closed and reopened (a half-open connection) */
  heartbeatMs?: number
  staleMs?: number
}

export class RunStream {
  private readonly opts: RunStreamOptions
  private socket: SocketLike | null = null
  private lastSeq = -1
  private epoch: string | null = null
  private attempt = 0
  private connected = false
  private everConnected = false
  private live: boolean | null = null
  private lastRecordAt: number | null = null
  private lastMessageAt = 0
  private nextRetryAt: number | null = null
  private retryTimer: ReturnType<typeof setTimeout> | null = null
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null
  private stopped = true
  private reloading = false
  private buffered: MetricRecord[] = []

  constructor(options: RunStreamOptions) {
    this.opts = options
  }

  private now(): number {
    return (this.opts.now ?? Date.now)()
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.connect()
    const every = this.opts.heartbeatMs ?? 15_000
    this.heartbeatTimer = setInterval(() => {
      this.heartbeat()
    }, every)
  }

  stop(): void {
    this.stopped = true
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer)
    this.retryTimer = null
    this.heartbeatTimer = null
    this.dropSocket()
  }

  /** Reconnect now instead of waiting out the backoff (the browser came back online, a button). */
  reconnectNow(): void {
    if (this.stopped || this.socket !== null) return
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    this.retryTimer = null
    this.connect()
  }

  status(): StreamStatus {
    return {
      connected: this.connected,
      everConnected: this.everConnected,
      attempt: this.attempt,
      nextRetryAt: this.nextRetryAt,
      lastRecordAt: this.lastRecordAt,
      lastSeq: this.lastSeq,
      epoch: this.epoch,
      live: this.live,
      reloading: this.reloading,
    }
  }

  private emitStatus(): void {
    this.opts.onStatus?.(this.status())
  }

  private connect(): void {
    this.nextRetryAt = null
    const create = this.opts.createSocket ?? ((url: string) => new WebSocket(url) as unknown as SocketLike)
    let socket: SocketLike
    try {
      socket = create(this.opts.socketUrl(this.lastSeq, this.epoch))
    } catch {
      this.scheduleReconnect()
      return
    }
    this.socket = socket
    this.lastMessageAt = this.now()
    socket.onmessage = (event) => {
      if (socket === this.socket && typeof event.data === 'string') this.handle(event.data)
    }
    socket.onclose = () => {
      if (socket !== this.socket) return
      this.socket = null
      this.connected = false
      this.scheduleReconnect()
    }
    socket.onerror = () => {
      // a close event follows; reconnecting is its business
    }
    this.emitStatus()
  }

  private dropSocket(): void {
    const socket = this.socket
    this.socket = null
    this.connected = false
    if (socket) {
      socket.onmessage = null
      socket.onclose = null
      socket.onerror = null
      try {
        socket.close()
      } catch {
        // already closed
      }
    }
  }

  private scheduleReconnect(): void {
    if (this.stopped) return
    const delay = backoffDelay(this.attempt, this.opts.backoff ?? DEFAULT_BACKOFF, this.opts.random)
    this.attempt += 1
    this.nextRetryAt = this.now() + delay
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      if (!this.stopped) this.connect()
    }, delay)
    this.emitStatus()
  }

  private heartbeat(): void {
    const socket = this.socket
    if (!socket) return
    if (this.now() - this.lastMessageAt > (this.opts.staleMs ?? 45_000)) {
      // nothing heard, not even a pong: treat the connection as gone
      this.dropSocket()
      this.scheduleReconnect()
      return
    }
    if (this.connected) {
      try {
        socket.send(JSON.stringify({ kind: 'ping' }))
      } catch {
        // the close event will follow
      }
    }
  }

  private handle(text: string): void {
    this.lastMessageAt = this.now()
    let parsed: unknown
    try {
      parsed = parseJsonLenient(text)
    } catch {
      return // not JSON: dropped, as the sidecar does with ours
    }
    if (!isMessage(parsed)) return
    const message = parsed
    switch (message.kind) {
      case 'hello':
        if (message.run_id !== this.opts.runId) return
        this.attempt = 0
        this.connected = true
        this.everConnected = true
        this.live = message.live
        this.epoch ??= message.epoch
        this.emitStatus()
        return
      case 'records':
        if (!Array.isArray(message.records)) return
        if (this.reloading) this.buffered.push(...message.records)
        else this.apply(message.records)
        return
      case 'reset':
        void this.reload(message.epoch)
        return
      case 'run':
        if (message.run.run_id === this.opts.runId) {
          this.live = message.run.live
          this.opts.onRun?.(message.run)
          this.emitStatus()
        }
        return
      default:
        return
    }
  }

  /** Hand on the records this page has not seen yet (seq above the last one), in seq order. */
  private apply(records: readonly MetricRecord[]): void {
    const fresh: MetricRecord[] = []
    const ordered = isSorted(records) ? records : [...records].sort((a, b) => a.seq - b.seq)
    for (const record of ordered) {
      if (record.run_id !== this.opts.runId || !(record.seq > this.lastSeq)) continue
      fresh.push(record)
      this.lastSeq = record.seq
    }
    if (fresh.length === 0) return
    this.lastRecordAt = this.now()
    this.opts.onRecords(fresh)
    this.emitStatus()
  }

  /**
   * The sidecar restarted (another epoch). Reload what it holds after our last seq over HTTP; records
   * the socket brings meanwhile wait in a buffer and are applied after, so nothing is out of order.
   */
  private async reload(newEpoch: string): Promise<void> {
    if (this.reloading) return
    this.reloading = true
    this.emitStatus()
    const socket = this.socket
    const history = await this.opts.loadHistory(this.lastSeq).catch(() => null)
    if (this.stopped) return
    this.reloading = false
    this.epoch = newEpoch
    const buffered = this.buffered
    this.buffered = []
    if (history === null) {
      // Could not reload: reconnect in the new epoch instead, which replays everything after our seq.
      if (socket === this.socket) {
        this.dropSocket()
        this.scheduleReconnect()
      }
      return
    }
    this.apply(history)
    this.apply(buffered)
    this.emitStatus()
  }
}

function isMessage(value: unknown): value is ServerMessage {
  return typeof value === 'object' && value !== null && typeof (value as { kind?: unknown }).kind === 'string'
}

function isSorted(records: readonly MetricRecord[]): boolean {
  for (let i = 1; i < records.length; i++) {
    const previous = records[i - 1]
    const current = records[i]
    if (previous && current && current.seq < previous.seq) return false
  }
  return true
}
