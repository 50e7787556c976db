// Tokens per second (left axis) and MFU (right axis, dashed), with TFLOP/s in the numbers.
import { useMemo, useState } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { Legend, type LegendEntry } from '../../components/Legend'
import { formatFixed, formatInt, formatPercent } from '../../lib/format'
import { lastOf } from '../stream/runData'
import { MFU_AXIS, TOKENS_PER_S_AXIS, X_AXES } from './axes'
import { useRunSeries, type ChartRun, type SeriesSpec } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { TimeSeriesChart } from './TimeSeriesChart'

const SPECS: SeriesSpec[] = [
  { key: 'tokens_per_s', smoothing: 0 },
  { key: 'mfu', smoothing: 0 },
]

export function ThroughputCard({ runs }: { runs: readonly ChartRun[] }) {
  const [range, setRange] = useState<readonly [number, number] | null>(null)
  const series = useRunSeries(runs, SPECS, 'step', range)
  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    runs.forEach((run, i) => {
      const [tps, mfu] = series[i] ?? []
      const prefix = runs.length > 1 ? `${run.name} ` : ''
      if (tps) out.push(...seriesDatasets(tps.view, { runId: run.info.run_id, key: 'tokens_per_s', label: `${prefix}tokens/s`, color: run.color, smoothing: 0 }))
      if (mfu) out.push(...seriesDatasets(mfu.view, { runId: run.info.run_id, key: 'mfu', label: `${prefix}MFU`, color: run.color, smoothing: 0, yAxisID: 'y2', dash: [5, 4] }))
    })
    return out
  }, [runs, series])

  const primary = runs.find((run) => run.local)
  const last = primary?.local ? lastOf(primary.local.train) : undefined
  const legend: LegendEntry[] = runs.flatMap((run) => {
    const prefix = runs.length > 1 ? `${run.name} ` : ''
    return [
      { label: `${prefix}tokens/s (left)`, color: run.color, kind: 'line' as const },
      { label: `${prefix}MFU (right)`, color: run.color, kind: 'dashed' as const },
    ]
  })

  return (
    <Card
      id="throughput"
      title="Throughput"
      numbers={
        <>
          <BigNumber label="tokens/s" value={formatInt(last?.tokens_per_s)} unit="tok/s" testId="value-tokens-per-s" />
          <BigNumber label="achieved" value={formatFixed(last?.tflops, last && last.tflops < 10 ? 2 : 1)} unit="TFLOP/s" testId="value-tflops" size="medium" />
          <BigNumber label="MFU" value={formatPercent(last?.mfu)} testId="value-mfu" size="medium" />
        </>
      }
      footer={<Legend entries={legend} />}
    >
      <TimeSeriesChart
        testId="chart-throughput"
        ariaLabel="Tokens per second and model FLOPs utilisation by step"
        datasets={datasets}
        x={X_AXES.step}
        y={TOKENS_PER_S_AXIS}
        y2={MFU_AXIS}
        range={range}
        onRangeChange={setRange}
      />
    </Card>
  )
}
