// fp16 health: the dynamic loss scale (log y) with a marker at every skipped (overflowed) step.
import { useMemo, useState } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { Legend } from '../../components/Legend'
import { formatCount, formatInt } from '../../lib/format'
import { lastOf } from '../stream/runData'
import { SCALE_AXIS, X_AXES } from './axes'
import { useRunSeries, type ChartRun, type SeriesSpec } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { markerLegend } from './markerLegend'
import { TimeSeriesChart } from './TimeSeriesChart'

const SPECS: SeriesSpec[] = [{ key: 'loss_scale', smoothing: 0 }]

export function Fp16Card({ runs }: { runs: readonly ChartRun[] }) {
  const [range, setRange] = useState<readonly [number, number] | null>(null)
  const primaryOnly = useMemo(() => runs.filter((run) => run.local), [runs])
  const series = useRunSeries(primaryOnly, SPECS, 'step', range)
  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    primaryOnly.forEach((run, i) => {
      const view = series[i]?.[0]?.view
      if (view)
        out.push(
          ...seriesDatasets(view, {
            runId: run.info.run_id,
            key: 'loss_scale',
            label: 'loss scale',
            color: run.color,
            smoothing: 0,
          }),
        )
    })
    return out
  }, [primaryOnly, series])
  const primary = primaryOnly[0]
  const last = primary?.local ? lastOf(primary.local.train) : undefined
  const unscaled = primary?.local ? primary.local.train.every((r) => r.loss_scale === 1 && r.skipped_steps === 0) : true
  return (
    <Card
      id="fp16"
      title="fp16 health"
      numbers={
        <>
          <BigNumber label="loss scale" value={formatCount(last?.loss_scale)} testId="value-loss-scale" />
          <BigNumber
            label="skipped steps"
            value={formatInt(last?.skipped_steps)}
            testId="value-skipped-steps"
            size="medium"
          />
        </>
      }
      footer={
        unscaled && last ? (
          <p className="card-note">No loss scaling: this run trains in fp32 or bf16 (scale 1, no overflow skips).</p>
        ) : (
          <Legend
            entries={[
              { label: 'loss scale', color: primary?.color ?? '#0072B2', kind: 'line' },
              ...markerLegend(datasets),
            ]}
          />
        )
      }
    >
      <TimeSeriesChart
        testId="chart-fp16"
        ariaLabel="fp16 loss scale by step, with skipped steps marked"
        datasets={datasets}
        x={X_AXES.step}
        y={SCALE_AXIS}
        yLog
        range={range}
        onRangeChange={setRange}
        height={180}
      />
    </Card>
  )
}
