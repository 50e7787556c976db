import { describe, expect, it } from 'vitest'
import { arraySeries, bucketLocally } from '../series/seriesView'
import { seriesDatasets } from './datasets'

const style = { runId: 'r', key: 'loss', label: 'train', color: '#0072B2', smoothing: 0.6 }

describe('seriesDatasets', () => {
  it('draws band, faint raw and smoothed lines for a bucketed view, and markers on top', () => {
    const xs = Array.from({ length: 5000 }, (_, i) => i)
    const values: unknown[] = xs.map((x) => 3 - x / 5000)
    values[4000] = null
    const view = bucketLocally(arraySeries(xs, values, [100]), { buckets: 500, smoothing: 0.6 })
    const sets = seriesDatasets(view, style)
    expect(sets.map((d) => d.series.role)).toEqual(['band-min', 'band-max', 'raw', 'smoothed', 'markers'])
    const [bandMin, bandMax, raw, smoothed, markers] = sets
    expect(bandMax?.fill).toBe('-1')
    expect(raw?.borderColor).toMatch(/^rgba\(.*0\.3\)$/)
    expect(smoothed?.borderColor).toBe('#0072B2')
    expect(raw?.data).toHaveLength(view.points.length)
    expect(bandMin?.data[0]?.y).toBe(view.points[0]?.min)
    expect(markers?.data.map((p) => p.kind)).toEqual(['skipped', 'nan'])
    expect(markers?.pointStyle).toEqual(['rectRot', 'crossRot'])
    // the newest point is the raw line's last
    expect(raw?.data[raw.data.length - 1]?.x).toBe(4999)
  })

  it('raw views have no band; smoothing 0 draws the raw line solid and alone', () => {
    const view = bucketLocally(arraySeries([0, 1, 2], [1, 2, 3]), { smoothing: 0 })
    const sets = seriesDatasets(view, { ...style, smoothing: 0 })
    expect(sets.map((d) => d.series.role)).toEqual(['raw'])
    expect(sets[0]?.borderColor).toBe('#0072B2')
  })

  it('builds new arrays every time and shifts x by the offset', () => {
    const view = bucketLocally(arraySeries([100, 101], [1, 2]), { smoothing: 0 })
    const a = seriesDatasets(view, { ...style, xOffset: 100 })
    const b = seriesDatasets(view, { ...style, xOffset: 100 })
    expect(a[0]?.data).not.toBe(b[0]?.data)
    expect(a[0]?.data.map((p) => p.x)).toEqual([0, 1])
  })

  it('evaluation points are dashed with dots', () => {
    const view = bucketLocally(arraySeries([10, 20], [3, 2.5]), { smoothing: 0 })
    const [val] = seriesDatasets(view, { ...style, key: 'val_loss', asEval: true })
    expect(val?.series.role).toBe('val')
    expect(val?.borderDash).toEqual([6, 4])
    expect(val?.pointRadius).toBeGreaterThan(0)
  })
})
