import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { FakeSocket, trainRecord } from '../../test/fakeSocket'
import type { MetricRecord } from '../../types/protocol'
import { RunStream, type RunStreamOptions } from './RunStream'

const RUN = 'run-a'

function makeStream(overrides: Partial<RunStreamOptions> = {}) {
  const received: MetricRecord[] = []
  const loadHistory = vi.fn<(since: number) => Promise<MetricRecord[]>>(() => Promise.resolve([]))
  const stream = new RunStream({
    runId: RUN,
    socketUrl: (since, epoch) =>
      `ws://sidecar/ws/dashboard?run=${RUN}&since=${String(since)}${epoch ? `&epoch=${epoch}` : ''}`,
    loadHistory,
    onRecords: (records) => received.push(...records),
    createSocket: (url) => new FakeSocket(url),
    random: () => 0.5,
    backoff: { baseMs: 100, maxMs: 1000 },
    ...overrides,
  })
  return { stream, received, loadHistory }
}

const records = (from: number, to: number): MetricRecord[] => {
  const out: MetricRecord[] = []
  for (let seq = from; seq <= to; seq++) out.push(trainRecord(RUN, seq))
  return out
}

const seqs = (list: readonly MetricRecord[]): number[] => list.map((r) => r.seq)

beforeEach(() => {
  FakeSocket.reset()
  vi.useFakeTimers()
})

afterEach(() => {
  vi.useRealTimers()
})

describe('RunStream', () => {
  it('asks for everything first, then resumes from the last seq it saw, without duplicates', () => {
    const { stream, received } = makeStream()
    stream.start()
    const first = FakeSocket.latest()
    expect(first.params.get('since')).toBe('-1')
    expect(first.params.get('epoch')).toBeNull()

    first.serverSend({ kind: 'hello', epoch: 'E1', run_id: RUN, live: true })
    first.serverSend({ kind: 'records', epoch: 'E1', records: records(0, 4) })
    first.serverClose()
    expect(stream.status().connected).toBe(false)

    vi.advanceTimersByTime(1000)
    const second = FakeSocket.latest()
    expect(second).not.toBe(first)
    expect(second.params.get('since')).toBe('4')
    expect(second.params.get('epoch')).toBe('E1')
    second.serverSend({ kind: 'hello', epoch: 'E1', run_id: RUN, live: true })
    // a replay that overlaps what we hold, then live records
    second.serverSend({ kind: 'records', epoch: 'E1', records: records(3, 7) })
    second.serverSend({ kind: 'records', epoch: 'E1', records: records(7, 9) })
    expect(seqs(received)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(stream.status().lastSeq).toBe(9)
    stream.stop()
  })

  it('backs off exponentially with jitter while the sidecar is down, and resets after a hello', () => {
    const delays: number[] = []
    let now = 0
    const { stream } = makeStream({ now: () => now })
    stream.start()
    for (let i = 0; i < 6; i++) {
      FakeSocket.latest().serverClose()
      const status = stream.status()
      if (status.nextRetryAt === null) throw new Error('no retry scheduled')
      delays.push(status.nextRetryAt - now)
      now = status.nextRetryAt
      vi.advanceTimersByTime(status.nextRetryAt)
    }
    // random() = 0.5: three quarters of the cap; cap = base * 2^attempt up to maxMs
    expect(delays).toEqual([75, 150, 300, 600, 750, 750])
    FakeSocket.latest().serverSend({ kind: 'hello', epoch: 'E', run_id: RUN, live: true })
    expect(stream.status().attempt).toBe(0)
    stream.stop()
  })

  it('jitter spreads the delay over the upper half of the cap', () => {
    const low = makeStream({ random: () => 0 })
    const high = makeStream({ random: () => 0.999999 })
    low.stream.start()
    high.stream.start()
    FakeSocket.all[0]?.serverClose()
    FakeSocket.all[1]?.serverClose()
    const lowDelay = (low.stream.status().nextRetryAt ?? 0) - Date.now()
    const highDelay = (high.stream.status().nextRetryAt ?? 0) - Date.now()
    expect(lowDelay).toBe(50)
    expect(highDelay).toBeGreaterThan(99)
    expect(highDelay).toBeLessThanOrEqual(100)
    low.stream.stop()
    high.stream.stop()
  })

  it('on reset reloads the history after its last seq and applies only newer records, in order', async () => {
    let resolveHistory: (records: MetricRecord[]) => void = () => undefined
    const loadHistory = vi.fn<(since: number) => Promise<MetricRecord[]>>(
      () =>
        new Promise<MetricRecord[]>((resolve) => {
          resolveHistory = resolve
        }),
    )
    const { stream, received } = makeStream({ loadHistory })
    stream.start()
    const first = FakeSocket.latest()
    first.serverSend({ kind: 'hello', epoch: 'E1', run_id: RUN, live: true })
    first.serverSend({ kind: 'records', epoch: 'E1', records: records(0, 5) })
    first.serverClose()
    vi.advanceTimersByTime(1000)

    // the sidecar restarted: another epoch; it answers reset, then streams live records
    const second = FakeSocket.latest()
    expect(second.params.get('epoch')).toBe('E1')
    second.serverSend({ kind: 'hello', epoch: 'E2', run_id: RUN, live: true })
    second.serverSend({ kind: 'reset', epoch: 'E2' })
    expect(loadHistory).toHaveBeenCalledWith(5)
    expect(stream.status().reloading).toBe(true)
    second.serverSend({ kind: 'records', epoch: 'E2', records: records(11, 12) })
    expect(seqs(received)).toEqual([0, 1, 2, 3, 4, 5]) // live records wait for the history

    resolveHistory(records(3, 11)) // the snapshot overlaps both what we hold and the live ones
    await vi.waitFor(() => {
      expect(stream.status().reloading).toBe(false)
    })
    expect(seqs(received)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    expect(stream.status().epoch).toBe('E2')

    // and the next reconnect resumes in the new epoch
    second.serverClose()
    vi.advanceTimersByTime(1000)
    expect(FakeSocket.latest().params.get('epoch')).toBe('E2')
    expect(FakeSocket.latest().params.get('since')).toBe('12')
    stream.stop()
  })

  it('when the reload fails, reconnects in the new epoch so the sidecar replays instead', async () => {
    const { stream, received } = makeStream({ loadHistory: vi.fn(() => Promise.reject(new Error('down'))) })
    stream.start()
    const first = FakeSocket.latest()
    first.serverSend({ kind: 'hello', epoch: 'E1', run_id: RUN, live: true })
    first.serverSend({ kind: 'records', epoch: 'E1', records: records(0, 2) })
    first.serverSend({ kind: 'reset', epoch: 'E2' })
    await vi.waitFor(() => {
      expect(first.closed).toBe(true)
    })
    vi.advanceTimersByTime(1000)
    const next = FakeSocket.latest()
    expect(next.params.get('epoch')).toBe('E2')
    expect(next.params.get('since')).toBe('2')
    next.serverSend({ kind: 'records', epoch: 'E2', records: records(1, 4) })
    expect(seqs(received)).toEqual([0, 1, 2, 3, 4])
    stream.stop()
  })

  it('ignores garbage, other runs and records out of order', () => {
    const { stream, received } = makeStream()
    stream.start()
    const socket = FakeSocket.latest()
    socket.serverSend('not json {')
    socket.serverSend({ kind: 'records', epoch: 'E', records: [trainRecord('other-run', 0)] })
    socket.serverSend({
      kind: 'records',
      epoch: 'E',
      records: [trainRecord(RUN, 2), trainRecord(RUN, 0), trainRecord(RUN, 1)],
    })
    expect(seqs(received)).toEqual([0, 1, 2])
    expect(received.every((r) => r.run_id === RUN)).toBe(true)
    stream.stop()
  })

  it('reads the bare NaN that Python json writes', () => {
    const { stream, received } = makeStream()
    stream.start()
    const text = JSON.stringify({ kind: 'records', epoch: 'E', records: [trainRecord(RUN, 0)] }).replace(
      '"loss":4',
      '"loss":NaN',
    )
    FakeSocket.latest().serverSend(text)
    expect(received).toHaveLength(1)
    expect(received[0]?.type === 'train' && received[0].loss).toBe('NaN')
    stream.stop()
  })

  it('pings while connected and drops a socket that went silent', () => {
    let now = 0
    const { stream } = makeStream({ now: () => now, heartbeatMs: 1000, staleMs: 3000 })
    stream.start()
    const socket = FakeSocket.latest()
    socket.serverSend({ kind: 'hello', epoch: 'E', run_id: RUN, live: true })
    now = 1000
    vi.advanceTimersByTime(1000)
    expect(socket.sent).toContain(JSON.stringify({ kind: 'ping' }))
    now = 5000
    vi.advanceTimersByTime(1000)
    expect(socket.closed).toBe(true)
    expect(stream.status().connected).toBe(false)
    expect(stream.status().nextRetryAt).not.toBeNull()
    stream.stop()
  })

  it('stop() closes the socket and schedules nothing more', () => {
    const { stream } = makeStream()
    stream.start()
    const socket = FakeSocket.latest()
    stream.stop()
    expect(socket.closed).toBe(true)
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.all).toHaveLength(1)
  })
})
