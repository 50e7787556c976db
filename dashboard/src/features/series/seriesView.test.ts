import { describe, expect, it } from 'vitest'
import { emaDebiased } from '../../lib/ema'
import { trainRecord } from '../../test/fakeSocket'
import { addRecords, emptyRunData } from '../stream/runData'
import { localSeries } from './localSeries'
import {
  arraySeries,
  bucketLocally,
  localTail,
  mergeMarkers,
  normaliseSeries,
  placeMarkers,
  skippedStepXs,
  withTail,
  type LocalSeries,
} from './seriesView'

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

describe('bucketLocally', () => {
  it('gives the raw points when the range holds no more than the bucket count', () => {
    const view = bucketLocally(arraySeries([0, 1, 2], [3, 2, 1]), { buckets: 3, smoothing: 0 })
    expect(view.raw).toBe(true)
    expect(view.points.map((p) => [p.x, p.min, p.max, p.last])).toEqual([
      [0, 3, 3, 3],
      [1, 2, 2, 2],
      [2, 1, 1, 1],
    ])
  })

  it('keeps a spike as the max of its bucket, and the newest point as the last of the final bucket', () => {
    const n = 100_000
    const xs = range(n)
    const values = xs.map((i) => (i === 54_321 ? 50 : 2 + Math.sin(i / 100) * 0.1))
    const view = bucketLocally(arraySeries(xs, values), { buckets: 1500, smoothing: 0.6 })
    expect(view.raw).toBe(false)
    expect(view.points.length).toBeLessThanOrEqual(1500)
    expect(view.points.length).toBeGreaterThan(1400)
    expect(Math.max(...view.points.map((p) => p.max))).toBe(50)
    const last = view.points[view.points.length - 1]
    expect(last?.x).toBe(n - 1)
    expect(last?.last).toBe(values[n - 1])
    // smoothed over the whole series before bucketing
    expect(last?.smoothed).toBe(emaDebiased(values, 0.6)[n - 1])
  })

  it('lists non-finite values and skipped steps as markers, never in a bucket', () => {
    const series: LocalSeries = arraySeries([0, 1, 2, 3, 4], [1, null, 'Infinity', 2, Number.NaN], [3])
    const view = bucketLocally(series, { buckets: 10, smoothing: 0 })
    expect(view.points.map((p) => p.x)).toEqual([0, 3])
    expect(view.markers).toEqual([
      { x: 1, kind: 'nan' },
      { x: 2, kind: 'inf' },
      { x: 3, kind: 'skipped' },
      { x: 4, kind: 'nan' },
    ])
  })

  it('restricts to a zoomed range and gives raw points inside it', () => {
    const xs = range(10_000)
    const view = bucketLocally(
      arraySeries(
        xs,
        xs.map((x) => x * 2),
      ),
      { buckets: 1500, smoothing: 0, xMin: 100, xMax: 199 },
    )
    expect(view.raw).toBe(true)
    expect(view.points).toHaveLength(100)
    expect(view.points[0]?.x).toBe(100)
    expect(view.points[99]?.last).toBe(398)
  })
})

describe('normaliseSeries', () => {
  it("reads the sidecar's answer as it sends it (`buckets` is the bucket count there)", () => {
    const view = normaliseSeries({
      epoch: 'e',
      run_id: 'r',
      key: 'loss',
      x: 'step',
      smoothing: 0.6,
      buckets: 1500,
      raw: false,
      count: 2999,
      x_min: 1,
      x_max: 3000,
      markers: [{ x: 1777, kind: 'nan' }],
      points: [{ x: 2, min: 9.35, max: 9.5, last: 9.35, smoothed: 9.4 }],
    })
    expect(view).toEqual({
      raw: false,
      count: 2999,
      points: [{ x: 2, min: 9.35, max: 9.5, last: 9.35, smoothed: 9.4 }],
      markers: [{ x: 1777, kind: 'nan' }],
    })
  })

  it('reads buckets, raw points and markers in the spellings the sidecar may use', () => {
    const bucketed = normaliseSeries({
      raw: false,
      buckets: [
        { x: 10, min: 1, max: 3, last: 2, smoothed: 2.5 },
        { x: 5, min: 4, max: 6, last: 5, smoothed: 5 },
      ],
      markers: [
        { x: 7, kind: 'nan' },
        { x: 8, value: 'Infinity' },
        { x: 9, kind: 'skipped_step' },
      ],
    })
    expect(bucketed.points.map((p) => p.x)).toEqual([5, 10])
    expect(bucketed.markers.map((m) => m.kind)).toEqual(['nan', 'inf', 'skipped'])
    const raw = normaliseSeries({ raw: true, points: [{ x: 1, y: 4, smoothed: 4 }] })
    expect(raw.raw).toBe(true)
    expect(raw.points).toEqual([{ x: 1, min: 4, max: 4, last: 4, smoothed: 4 }])
  })
})

describe('withTail / localTail', () => {
  it('appends only the points held here beyond the fetched view, smoothed over the whole series', () => {
    const values = [5, 4, 6, 3, 4, null, 2, 3]
    const series: LocalSeries = arraySeries(range(8), values)
    const fetched = bucketLocally(arraySeries(range(5), values.slice(0, 5)), { buckets: 100, smoothing: 0.5 })
    const view = withTail(fetched, localTail(series, 4, 0.5))
    expect(view.points.map((p) => p.x)).toEqual([0, 1, 2, 3, 4, 6, 7])
    expect(view.markers).toEqual([{ x: 5, kind: 'nan' }])
    const full = emaDebiased(values, 0.5)
    expect(view.points[view.points.length - 1]?.smoothed).toBe(full[7])
  })

  it('adds nothing (same object) when there is nothing new', () => {
    const fetched = bucketLocally(arraySeries([0, 1], [1, 2]), { smoothing: 0 })
    expect(withTail(fetched, localTail(arraySeries([0, 1], [1, 2]), 1, 0))).toBe(fetched)
  })
})

describe('markers', () => {
  it('sit on the line at the last finite value before them (the first one at the very start)', () => {
    const view = bucketLocally(arraySeries([0, 1, 2, 3, 4], [Number.NaN, 2, 3, null, 5]), { smoothing: 0 })
    expect(placeMarkers(view, false)).toEqual([
      { x: 0, y: 2, kind: 'nan' },
      { x: 3, y: 3, kind: 'nan' },
    ])
  })

  it('skipped steps are where the counter grew; merged lists hold each marker once', () => {
    expect(skippedStepXs([10, 20, 30, 40], [0, 1, 1, 3])).toEqual([20, 40])
    expect(
      mergeMarkers(
        [{ x: 2, kind: 'skipped' }],
        [
          { x: 2, kind: 'skipped' },
          { x: 1, kind: 'nan' },
        ],
      ),
    ).toEqual([
      { x: 1, kind: 'nan' },
      { x: 2, kind: 'skipped' },
    ])
  })
})

describe('the branch a resumed run is on', () => {
  it('drops the records past the resume step that were logged before it', () => {
    const data = emptyRunData('r')
    const steps = [1, 2, 3, 4, 5, 3, 4, 5, 6]
    addRecords(
      data,
      steps.map((step, seq) => trainRecord('r', seq, step)),
    )
    expect(data.train).toHaveLength(9)
    expect(data.branchTrain.map((r) => r.seq)).toEqual([0, 1, 5, 6, 7, 8])
    const series = localSeries(data, 'loss', 'step')
    expect(Array.from({ length: series.length }, (_, i) => series.x(i))).toEqual([1, 2, 3, 4, 5, 6])
  })

  it('keeps the skipped steps of that branch only', () => {
    const data = emptyRunData('r')
    const counts = [0, 1, 1, 2, 1, 1]
    const steps = [1, 2, 3, 4, 3, 4]
    addRecords(
      data,
      steps.map((step, seq) => ({ ...trainRecord('r', seq, step), skipped_steps: counts[seq] ?? 0 })),
    )
    expect(localSeries(data, 'loss', 'step').skipped).toEqual([2])
  })
})

describe('localTail carrying on from the sidecar', () => {
  it('gives the same smoothed values as smoothing the whole series again', () => {
    const values = Array.from({ length: 50 }, (_, i) => 3 + Math.sin(i) + (i === 30 ? Number.NaN : 0))
    const xs = range(50)
    const whole = emaDebiased(values, 0.8)
    const count = values.slice(0, 40).filter((v) => Number.isFinite(v)).length
    const tail = localTail(arraySeries(xs, values), 39, 0.8, { smoothed: whole[39] ?? Number.NaN, count })
    expect(tail.points.map((p) => p.x)).toEqual(range(10).map((i) => 40 + i))
    tail.points.forEach((p) => {
      expect(p.smoothed).toBeCloseTo(whole[p.x] ?? Number.NaN, 12)
    })
  })
})
