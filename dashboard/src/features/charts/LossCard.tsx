// Train loss (smoothed over the faint raw line, min/max band when bucketed) and validation loss on the
// same axes; smoothing slider, log-y, x as step / tokens / wall time; drag to zoom.
import { useDeferredValue, useMemo, useState } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { Legend, type LegendEntry } from '../../components/Legend'
import { formatInt, formatValue } from '../../lib/format'
import type { SeriesX } from '../../types/protocol'
import { lastOf } from '../stream/runData'
import { LOSS_AXIS, X_AXES, X_LABELS } from './axes'
import { useRunSeries, xOffset, type ChartRun, type SeriesSpec } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { markerLegend } from './markerLegend'
import { TimeSeriesChart } from './TimeSeriesChart'

export const DEFAULT_SMOOTHING = 0.6

export function LossCard({ runs }: { runs: readonly ChartRun[] }) {
  const [smoothing, setSmoothing] = useState(DEFAULT_SMOOTHING)
  const [logY, setLogY] = useState(false)
  const [x, setX] = useState<SeriesX>('step')
  const [range, setRange] = useState<readonly [number, number] | null>(null)
  const smoothingQuery = useDeferredValue(smoothing)
  const specs = useMemo<SeriesSpec[]>(
    () => [
      { key: 'loss', smoothing: smoothingQuery },
      { key: 'val_loss', smoothing: 0 },
    ],
    [smoothingQuery],
  )
  const series = useRunSeries(runs, specs, x, range)

  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    runs.forEach((run, i) => {
      const [train, val] = series[i] ?? []
      const offset = xOffset(run, x)
      const label = runs.length > 1 ? run.name : 'train'
      if (train) {
        out.push(
          ...seriesDatasets(train.view, {
            runId: run.info.run_id,
            key: 'loss',
            label,
            color: run.color,
            smoothing: smoothingQuery,
            xOffset: offset,
          }),
        )
      }
      if (val) {
        const valLabel = runs.length > 1 ? `${run.name} val` : 'val'
        out.push(
          ...seriesDatasets(val.view, {
            runId: run.info.run_id,
            key: 'val_loss',
            label: valLabel,
            color: run.color,
            smoothing: 0,
            xOffset: offset,
            asEval: true,
          }),
        )
      }
    })
    return out
  }, [runs, series, x, smoothingQuery])

  const primary = runs.find((run) => run.local)
  const lastTrain = primary?.local ? lastOf(primary.local.train) : undefined
  const lastEval = primary?.local ? lastOf(primary.local.eval) : undefined
  const lastLoss = lastTrain?.loss ?? primary?.info.last_loss ?? null
  const valLoss = lastEval?.val_loss ?? primary?.info.val_loss ?? null

  const legend: LegendEntry[] = []
  for (const run of runs) {
    const prefix = runs.length > 1 ? `${run.name} ` : ''
    legend.push({ label: `${prefix}train${smoothingQuery > 0 ? ' (smoothed)' : ''}`, color: run.color, kind: 'line' })
    if (smoothingQuery > 0) legend.push({ label: `${prefix}raw`, color: run.color, kind: 'faint' })
    legend.push({ label: `${prefix}val`, color: run.color, kind: 'dashed' })
  }
  legend.push(...markerLegend(datasets))

  const tools = (
    <>
      <label className="tool">
        <span>Smoothing</span>
        <input
          type="range"
          min={0}
          max={0.99}
          step={0.01}
          value={smoothing}
          data-testid="smoothing-slider"
          aria-valuetext={smoothing.toFixed(2)}
          onChange={(e) => {
            setSmoothing(Number(e.target.value))
          }}
        />
        <output className="tool-value">{smoothing.toFixed(2)}</output>
      </label>
      <label className="tool">
        <input
          type="checkbox"
          checked={logY}
          data-testid="loss-log-y"
          onChange={(e) => {
            setLogY(e.target.checked)
          }}
        />
        <span>Log y</span>
      </label>
      <label className="tool">
        <span>x</span>
        <select
          value={x}
          data-testid="loss-x-axis"
          onChange={(e) => {
            setX(e.target.value as SeriesX)
            setRange(null)
          }}
        >
          {(Object.keys(X_LABELS) as SeriesX[]).map((key) => (
            <option key={key} value={key}>
              {X_LABELS[key]}
            </option>
          ))}
        </select>
      </label>
    </>
  )

  return (
    <Card
      id="loss"
      title="Loss"
      tools={tools}
      numbers={
        <>
          <BigNumber
            label="train loss"
            value={formatValue(lastLoss)}
            testId="value-loss"
            note={lastTrain ? `step ${formatInt(lastTrain.step)}` : undefined}
          />
          <BigNumber
            label="val loss"
            value={formatValue(valLoss)}
            testId="value-val-loss"
            note={lastEval ? `step ${formatInt(lastEval.step)}` : undefined}
            size="medium"
          />
        </>
      }
      footer={<Legend entries={legend} />}
    >
      <TimeSeriesChart
        testId="chart-loss"
        ariaLabel="Training and validation loss"
        datasets={datasets}
        x={X_AXES[x]}
        y={LOSS_AXIS}
        yLog={logY}
        range={range}
        onRangeChange={setRange}
        height={260}
      />
    </Card>
  )
}
