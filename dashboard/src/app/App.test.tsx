import { act, render, screen, waitFor } from '@testing-library/react'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { LineDataset } from '../features/charts/datasets'
import { chartProps } from '../test/chartStub'
import { FakeSocket, runInfo, trainRecord } from '../test/fakeSocket'
import type { MetricRecord, RunInfo } from '../types/protocol'
import { App } from './App'

vi.mock('react-chartjs-2', () => import('../test/chartStub'))

let runs: RunInfo[] = []
const fetchMock = vi.fn((input: RequestInfo | URL) => {
  const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
  const url = new URL(href, 'http://localhost:3000')
  if (url.pathname === '/api/runs') return Promise.resolve(new Response(JSON.stringify({ epoch: 'E1', runs })))
  // no bucketed view from this "sidecar": the page buckets what it holds
  return Promise.resolve(new Response('not here', { status: 503 }))
})

beforeEach(() => {
  FakeSocket.reset()
  chartProps.clear()
  vi.stubGlobal('fetch', fetchMock)
  vi.stubGlobal('WebSocket', FakeSocket)
  window.sessionStorage.clear()
  window.localStorage.clear()
  window.history.replaceState(null, '', '/')
})

afterEach(() => {
  vi.unstubAllGlobals()
})

const rawLossXs = (): number[] => {
  const datasets = (chartProps.get('chart-loss')?.data.datasets ?? []) as unknown as LineDataset[]
  const raw = datasets.find((d) => d.series.role === 'raw' && d.series.key === 'loss')
  return (raw?.data ?? []).map((p) => p.x)
}

describe('<App>', () => {
  it('with no runs shows the command that starts one', async () => {
    runs = []
    render(<App />)
    const empty = await screen.findByTestId('empty-state')
    expect(empty.textContent).toContain('make demo')
    expect(empty.textContent).toContain('--dashboard http://localhost:3000')
  })

  it('follows the newest run live, survives a dropped socket with no gap or duplicate, and says when it is disconnected', async () => {
    runs = [runInfo('run-a', { started: 1 }), runInfo('run-b', { started: 2, run_dir: '/runs/newest' })]
    const records = (from: number, to: number): MetricRecord[] => {
      const out: MetricRecord[] = []
      for (let seq = from; seq <= to; seq++) out.push(trainRecord('run-b', seq))
      return out
    }
    render(<App />)
    await waitFor(() => {
      expect(FakeSocket.all.length).toBeGreaterThan(0)
    })
    const first = FakeSocket.latest()
    expect(first.params.get('run')).toBe('run-b')
    act(() => {
      first.serverSend({ kind: 'hello', epoch: 'E1', run_id: 'run-b', live: true })
      first.serverSend({ kind: 'records', epoch: 'E1', records: records(0, 9) })
    })
    await waitFor(() => {
      expect(screen.getByTestId('step-counter').textContent).toBe('9')
    })
    expect(screen.getByTestId('state-badge').dataset.state).toBe('running')
    expect(screen.getByTestId('run-name').textContent).toBe('newest')
    await waitFor(() => {
      expect(rawLossXs()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    })

    act(() => {
      first.serverClose()
    })
    await screen.findByTestId('disconnected-banner')
    expect(screen.getByTestId('state-badge').dataset.state).toBe('disconnected')

    await waitFor(
      () => {
        expect(FakeSocket.all.length).toBe(2)
      },
      { timeout: 3000 },
    )
    const second = FakeSocket.latest()
    expect(second.params.get('since')).toBe('9')
    act(() => {
      second.serverSend({ kind: 'hello', epoch: 'E1', run_id: 'run-b', live: true })
      second.serverSend({ kind: 'records', epoch: 'E1', records: records(7, 14) })
    })
    await waitFor(() => {
      expect(screen.getByTestId('step-counter').textContent).toBe('14')
    })
    expect(screen.queryByTestId('disconnected-banner')).toBeNull()
    await waitFor(() => {
      expect(rawLossXs()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    })
  })

  it('a finished run says so, and its controls are off with the reason', async () => {
    runs = [runInfo('run-f', { state: 'finished', live: false, step: 100 })]
    render(<App />)
    await waitFor(() => {
      expect(FakeSocket.all.length).toBeGreaterThan(0)
    })
    act(() => {
      FakeSocket.latest().serverSend({ kind: 'hello', epoch: 'E1', run_id: 'run-f', live: false })
      FakeSocket.latest().serverSend({
        kind: 'records',
        epoch: 'E1',
        records: [
          trainRecord('run-f', 0, 100),
          {
            type: 'run_state',
            run_id: 'run-f',
            seq: 1,
            time: 0,
            state: 'finished',
            step: 100,
            detail: 'max_steps reached',
          },
        ],
      })
    })
    await waitFor(() => {
      expect(screen.getByTestId('state-badge').dataset.state).toBe('finished')
    })
    await waitFor(() => {
      expect(screen.getByTestId('state-detail').textContent).toBe('finished at step 100: max_steps reached')
    })
    const pause = screen.getByTestId('control-pause')
    expect(pause.getAttribute('aria-disabled')).toBe('true')
    expect(pause.getAttribute('title')).toContain('finished')
  })

  it('controls wait while the socket says the trainer is away, though the runs list still says live', async () => {
    runs = [runInfo('run-l', { state: 'running', live: true, step: 5 })]
    render(<App />)
    await waitFor(() => {
      expect(FakeSocket.all.length).toBeGreaterThan(0)
    })
    act(() => {
      FakeSocket.latest().serverSend({ kind: 'hello', epoch: 'E1', run_id: 'run-l', live: false })
      FakeSocket.latest().serverSend({ kind: 'records', epoch: 'E1', records: [trainRecord('run-l', 0, 5)] })
    })
    const pause = await screen.findByTestId('control-pause')
    await waitFor(() => {
      expect(pause.getAttribute('aria-disabled')).toBe('true')
    })
    expect(pause.getAttribute('title')).toContain('not reporting')
    act(() => {
      FakeSocket.latest().serverSend({ kind: 'run', run: runInfo('run-l', { state: 'running', live: true, step: 5 }) })
    })
    await waitFor(() => {
      expect(screen.getByTestId('control-pause').getAttribute('aria-disabled')).not.toBe('true')
    })
  })
})

describe('etaLabel', () => {
  it('gives no ETA for a run that stopped or crashed, and says done or paused', async () => {
    const { etaLabel } = await import('../features/topbar/TopBar')
    expect(etaLabel('running', 125)).toBe('2 min 05 s')
    expect(etaLabel('stopped', 2459)).toBe('—')
    expect(etaLabel('crashed', 10)).toBe('—')
    expect(etaLabel('finished', null)).toBe('done')
    expect(etaLabel('paused', 99)).toBe('paused')
  })
})
