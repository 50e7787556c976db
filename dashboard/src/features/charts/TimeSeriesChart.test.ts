import { describe, expect, it } from 'vitest'
import { thinLogTicks } from './TimeSeriesChart'

const logTicks = (lo: number, hi: number): { value: number }[] => {
  const out: { value: number }[] = []
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (let m = 1; m <= 9; m++) if (m * 10 ** e >= lo && m * 10 ** e <= hi) out.push({ value: m * 10 ** e })
  return out
}

describe('thinLogTicks', () => {
  it('keeps 1-2-5 ticks over a decade or so', () => {
    const scale = { ticks: logTicks(4096, 65536) }
    thinLogTicks(scale)
    expect(scale.ticks.map((t) => t.value)).toEqual([5000, 10000, 20000, 50000])
  })

  it('keeps at most 8 powers of ten over many decades', () => {
    const scale = { ticks: logTicks(1, 1e30) }
    thinLogTicks(scale)
    expect(scale.ticks.length).toBeLessThanOrEqual(8)
    expect(scale.ticks.every((t) => Number.isInteger(Math.round(Math.log10(t.value) * 1e6) / 1e6))).toBe(true)
  })

  it('leaves a short axis alone', () => {
    const scale = { ticks: logTicks(1, 5) }
    thinLogTicks(scale)
    expect(scale.ticks).toHaveLength(5)
  })
})

describe('clockTicks', () => {
  it('puts wall-time ticks on whole minutes and hours', async () => {
    const { clockTicks } = await import('./axes')
    expect(clockTicks(0, 2700)).toEqual([0, 600, 1200, 1800, 2400])
    expect(clockTicks(10, 100)).toEqual([15, 30, 45, 60, 75, 90])
    expect(clockTicks(0, 5 * 3600)).toEqual([0, 3600, 7200, 10800, 14400, 18000])
  })
})
