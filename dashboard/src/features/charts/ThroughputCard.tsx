// Throughput: tokens per second, achieved TFLOP/s and MFU as numbers; one of them plotted (smoothed,
// the raw values faint behind), chosen in the card.
import { useMemo, useState } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { Legend, type LegendEntry } from '../../components/Legend'
import { formatFixed, formatInt, formatPercent } from '../../lib/format'
import { lastOf } from '../stream/runData'
import type { TrainKey } from '../series/localSeries'
import { MFU_AXIS, TFLOPS_AXIS, TOKENS_PER_S_AXIS, X_AXES } from './axes'
import { useRunSeries, type ChartRun, type SeriesSpec } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { TimeSeriesChart, type AxisFormat } from './TimeSeriesChart'

type Plotted = Extract<TrainKey, 'tokens_per_s' | 'tflops' | 'mfu'>
const PLOTS: Record<Plotted, { label: string; axis: AxisFormat }> = {
  tokens_per_s: { label: 'tokens/s', axis: TOKENS_PER_S_AXIS },
  tflops: { label: 'TFLOP/s', axis: TFLOPS_AXIS },
  mfu: { label: 'MFU', axis: MFU_AXIS },
}
// throughput is noisy step to step: smooth harder than the loss
const SMOOTHING = 0.9

export function ThroughputCard({ runs }: { runs: readonly ChartRun[] }) {
  const [plotted, setPlotted] = useState<Plotted>('tokens_per_s')
  const [range, setRange] = useState<readonly [number, number] | null>(null)
  const specs = useMemo<SeriesSpec[]>(() => [{ key: plotted, smoothing: SMOOTHING }], [plotted])
  const series = useRunSeries(runs, specs, 'step', range)
  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    runs.forEach((run, i) => {
      const state = series[i]?.[0]
      const label = runs.length > 1 ? `${run.name} ${PLOTS[plotted].label}` : PLOTS[plotted].label
      if (state)
        out.push(
          ...seriesDatasets(state.view, {
            runId: run.info.run_id,
            key: plotted,
            label,
            color: run.color,
            smoothing: SMOOTHING,
          }),
        )
    })
    return out
  }, [runs, series, plotted])

  const primary = runs.find((run) => run.local)
  const last = primary?.local ? lastOf(primary.local.train) : undefined
  const legend: LegendEntry[] = runs.flatMap((run) => {
    const prefix = runs.length > 1 ? `${run.name} ` : ''
    return [
      { label: `${prefix}${PLOTS[plotted].label} (smoothed)`, color: run.color, kind: 'line' as const },
      { label: `${prefix}raw`, color: run.color, kind: 'faint' as const },
    ]
  })

  return (
    <Card
      id="throughput"
      title="Throughput"
      tools={
        <label className="tool">
          <span>Plot</span>
          <select
            value={plotted}
            data-testid="throughput-key"
            onChange={(e) => {
              setPlotted(e.target.value as Plotted)
            }}
          >
            {(Object.keys(PLOTS) as Plotted[]).map((key) => (
              <option key={key} value={key}>
                {PLOTS[key].label}
              </option>
            ))}
          </select>
        </label>
      }
      numbers={
        <>
          <BigNumber label="tokens/s" value={formatInt(last?.tokens_per_s)} unit="tok/s" testId="value-tokens-per-s" />
          <BigNumber
            label="achieved"
            value={formatFixed(last?.tflops, last && last.tflops < 10 ? 2 : 1)}
            unit="TFLOP/s"
            testId="value-tflops"
            size="medium"
          />
          <BigNumber label="MFU" value={formatPercent(last?.mfu)} testId="value-mfu" size="medium" />
        </>
      }
      footer={<Legend entries={legend} />}
    >
      <TimeSeriesChart
        testId="chart-throughput"
        ariaLabel={`${PLOTS[plotted].label} by step`}
        datasets={datasets}
        x={X_AXES.step}
        y={PLOTS[plotted].axis}
        range={range}
        onRangeChange={setRange}
      />
    </Card>
  )
}
