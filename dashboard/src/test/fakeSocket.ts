// A WebSocket stand-in the tests drive by hand: every socket the code opens is kept, with its URL; the
// test makes the "sidecar" say things (serverSend) and drops connections (serverClose).
import type { SocketLike } from '../features/stream/RunStream'
import type { MetricRecord, RunInfo } from '../types/protocol'

export class FakeSocket implements SocketLike {
  static all: FakeSocket[] = []
  readonly url: string
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: unknown) => void) | null = null
  onerror: ((event: unknown) => void) | null = null
  sent: string[] = []
  closed = false

  constructor(url: string) {
    this.url = url
    FakeSocket.all.push(this)
  }

  static reset(): void {
    FakeSocket.all = []
  }

  static latest(): FakeSocket {
    const socket = FakeSocket.all[FakeSocket.all.length - 1]
    if (!socket) throw new Error('no socket was opened')
    return socket
  }

  get params(): URLSearchParams {
    return new URL(this.url).searchParams
  }

  send(data: string): void {
    this.sent.push(data)
  }

  close(): void {
    this.closed = true
  }

  serverSend(message: unknown): void {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) })
  }

  serverClose(): void {
    this.closed = true
    this.onclose?.({ code: 1006 })
  }
}

export function trainRecord(runId: string, seq: number, step = seq, loss = 4 - step / 100): MetricRecord {
  return {
    type: 'train',
    run_id: runId,
    seq,
    time: 1_700_000_000 + step,
    step,
    tokens_seen: step * 1024,
    loss,
    lr: 3e-4,
    grad_norm: 1.0,
    loss_scale: 1,
    skipped_steps: 0,
    step_time: 1,
    tokens_per_s: 1024,
    tflops: 0.5,
    mfu: 0.3,
    memory_gb: null,
  }
}

export function runInfo(runId: string, overrides: Partial<RunInfo> = {}): RunInfo {
  return {
    run_id: runId,
    run_dir: `/runs/${runId}`,
    state: 'running',
    step: 10,
    max_steps: 100,
    tokens_seen: 10240,
    last_loss: 3.9,
    val_loss: null,
    started: 1_700_000_000,
    updated: 1_700_000_010,
    live: true,
    ...overrides,
  }
}
