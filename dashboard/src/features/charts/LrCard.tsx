// The learning rate the optimizer used at each step (the schedule times any multiplier set here).
import { useMemo, useState } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { formatInt, formatSci } from '../../lib/format'
import type { ControlRecord } from '../../types/protocol'
import { lastOf } from '../stream/runData'
import { LR_AXIS, X_AXES } from './axes'
import { useRunSeries, type ChartRun, type SeriesSpec } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { TimeSeriesChart } from './TimeSeriesChart'

const SPECS: SeriesSpec[] = [{ key: 'lr', smoothing: 0 }]

/** The multiplier in force: the last applied set_lr (1 when none). */
export function currentLrScale(controls: ReadonlyMap<string, ControlRecord>): { scale: number; step: number | null } {
  let best: ControlRecord | null = null
  for (const record of controls.values()) {
    if (record.action !== 'set_lr' || record.status !== 'applied') continue
    if (!best || record.seq > best.seq) best = record
  }
  return best && typeof best.lr_scale === 'number'
    ? { scale: best.lr_scale, step: best.step }
    : { scale: 1, step: null }
}

export function LrCard({ runs }: { runs: readonly ChartRun[] }) {
  const [range, setRange] = useState<readonly [number, number] | null>(null)
  const series = useRunSeries(runs, SPECS, 'step', range)
  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    runs.forEach((run, i) => {
      const lr = series[i]?.[0]
      if (lr)
        out.push(
          ...seriesDatasets(lr.view, {
            runId: run.info.run_id,
            key: 'lr',
            label: runs.length > 1 ? `${run.name} lr` : 'lr',
            color: run.color,
            smoothing: 0,
          }),
        )
    })
    return out
  }, [runs, series])
  const primary = runs.find((run) => run.local)
  const last = primary?.local ? lastOf(primary.local.train) : undefined
  const { scale, step } = primary?.local ? currentLrScale(primary.local.controls) : { scale: 1, step: null }
  return (
    <Card
      id="lr"
      title="Learning rate"
      numbers={
        <>
          <BigNumber label="learning rate" value={formatSci(last?.lr)} testId="value-lr" />
          <BigNumber
            label="multiplier on the schedule"
            value={`×${String(scale)}`}
            testId="value-lr-scale"
            note={step !== null ? `since step ${formatInt(step)}` : 'as written'}
            size="medium"
          />
        </>
      }
    >
      <TimeSeriesChart
        testId="chart-lr"
        ariaLabel="Learning rate by step"
        datasets={datasets}
        x={X_AXES.step}
        y={LR_AXIS}
        range={range}
        onRangeChange={setRange}
        height={180}
      />
    </Card>
  )
}
