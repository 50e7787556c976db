import { describe, expect, it } from 'vitest'
import { arraySeries, normaliseSeries, type LocalSeries } from './seriesView'
import { seriesState, type SeriesRequest } from './useSeries'

const local: LocalSeries = arraySeries([0, 1, 2, 3, 4, 5], [4, 3.5, 3.2, 3.0, null, 2.8], [2])
const request = (over: Partial<SeriesRequest> = {}): SeriesRequest => ({
  runId: 'r',
  key: 'loss',
  x: 'step',
  smoothing: 0,
  range: null,
  live: true,
  refreshToken: 1,
  local,
  ...over,
})
// what the sidecar answered a moment ago: points up to step 3, no skipped markers on `loss`
const answer = normaliseSeries({
  raw: true,
  points: [0, 1, 2, 3].map((x) => {
    const v = local.value(x) as number
    return { x, min: v, max: v, last: v, smoothed: v }
  }),
  markers: [],
})
const entry = { view: answer, error: null, at: 0, token: 1 }

describe('seriesState', () => {
  it("draws the sidecar's view, then the newer points held here, and the skipped steps the page knows", () => {
    const state = seriesState(request(), entry, undefined)
    expect(state.source).toBe('sidecar')
    expect(state.view.points.map((p) => p.x)).toEqual([0, 1, 2, 3, 5])
    expect(state.view.markers).toEqual([
      { x: 2, kind: 'skipped' },
      { x: 4, kind: 'nan' },
    ])
  })

  it('while zoomed, no tail beyond the view', () => {
    const state = seriesState(request({ range: [0, 3] }), entry, undefined)
    expect(state.view.points.map((p) => p.x)).toEqual([0, 1, 2, 3])
  })

  it('without an answer buckets what the page holds; an overlaid run shows its last view or nothing', () => {
    expect(seriesState(request(), undefined, undefined).source).toBe('page')
    expect(seriesState(request({ local: null }), undefined, answer)).toMatchObject({ source: 'sidecar', view: answer })
    expect(seriesState(request({ local: null }), undefined, undefined).source).toBe('none')
  })
})
