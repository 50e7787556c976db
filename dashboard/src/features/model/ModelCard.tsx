// Is the model well-behaved: the global gradient norm over steps, each layer's gradient norm / update
// ratio / weight norm as a heatmap over steps, the parameter count per module, and the histogram of a
// chosen layer's weights (from the `params` records that carry one).
import type { ChartOptions } from 'chart.js'
import { useMemo, useState } from 'react'
import { Bar } from 'react-chartjs-2'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { formatCompact, formatInt, formatSci, formatValue } from '../../lib/format'
import type { Histogram } from '../../types/schema'
import { NORM_AXIS, X_AXES } from '../charts/axes'
import { useRunSeries, type ChartRun, type SeriesSpec } from '../charts/chartRuns'
import { seriesDatasets } from '../charts/datasets'
import { setupCharts } from '../charts/setup'
import { TimeSeriesChart } from '../charts/TimeSeriesChart'
import { lastOf } from '../stream/runData'
import { Heatmap } from './Heatmap'
import { layerMatrix, METRIC_LABEL, moduleSizes, type LayerMetric } from './layerStats'

setupCharts()

const SPECS: SeriesSpec[] = [{ key: 'grad_norm', smoothing: 0 }]

export function ModelCard({ run }: { run: ChartRun | null }) {
  const [metric, setMetric] = useState<LayerMetric>('grad_norm')
  const [layer, setLayer] = useState<string>('')
  const runs = useMemo(() => (run ? [run] : []), [run])
  const series = useRunSeries(runs, SPECS, 'step', null)
  const gradDatasets = useMemo(() => {
    const view = series[0]?.[0]?.view
    return run && view
      ? seriesDatasets(view, {
          runId: run.info.run_id,
          key: 'grad_norm',
          label: 'grad norm',
          color: run.color,
          smoothing: 0,
        })
      : []
  }, [run, series])

  const params = run?.local?.params
  const version = run?.version ?? 0
  const matrix = useMemo(
    () => layerMatrix(params ?? [], metric),
    // version stands for the records in `params`
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [version, metric, run?.info.run_id],
  )
  const latestParams = params ? lastOf(params) : undefined
  const sizes = useMemo(() => moduleSizes(latestParams?.layers ?? []), [latestParams])
  const histograms = useMemo(() => {
    const byName = new Map<string, { histogram: Histogram; step: number }>()
    for (const record of params ?? [])
      if (record.histogram) byName.set(record.histogram.name, { histogram: record.histogram, step: record.step })
    return byName
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version, run?.info.run_id])
  const names = [...histograms.keys()]
  const chosen = histograms.get(layer) ?? histograms.get(names[names.length - 1] ?? '')

  const lastTrain = run?.local ? lastOf(run.local.train) : undefined
  const maxRatio = useMemo(() => {
    let best: { name: string; value: number } | null = null
    for (const l of latestParams?.layers ?? []) {
      if (
        typeof l.update_ratio === 'number' &&
        Number.isFinite(l.update_ratio) &&
        (!best || l.update_ratio > best.value)
      )
        best = { name: l.name, value: l.update_ratio }
    }
    return best
  }, [latestParams])

  return (
    <Card
      id="model"
      title="Model"
      tools={
        <label className="tool">
          <span>Heatmap</span>
          <select
            value={metric}
            data-testid="layer-metric"
            onChange={(e) => {
              setMetric(e.target.value as LayerMetric)
            }}
          >
            {(Object.keys(METRIC_LABEL) as LayerMetric[]).map((key) => (
              <option key={key} value={key}>
                {METRIC_LABEL[key]}
              </option>
            ))}
          </select>
        </label>
      }
      numbers={
        <>
          <BigNumber label="gradient norm" value={formatValue(lastTrain?.grad_norm)} testId="value-grad-norm" />
          <BigNumber
            label="largest update / weight"
            value={maxRatio ? formatSci(maxRatio.value) : '—'}
            note={maxRatio ? maxRatio.name : undefined}
            testId="value-update-ratio"
            size="medium"
          />
          <BigNumber
            label="parameters"
            value={formatCompact(sizes.total || null)}
            note={sizes.blocks ? `${String(sizes.blocks)} blocks` : undefined}
            size="medium"
          />
        </>
      }
    >
      <TimeSeriesChart
        testId="chart-grad-norm"
        ariaLabel="Global gradient norm by step"
        datasets={gradDatasets}
        x={X_AXES.step}
        y={NORM_AXIS}
        range={null}
        height={120}
      />
      <h3 className="sub-title">{METRIC_LABEL[metric]} per layer</h3>
      {matrix.rows.length > 0 ? (
        <Heatmap matrix={matrix} label={METRIC_LABEL[metric]} testId="chart-layers" />
      ) : (
        <p className="card-note">No per-layer statistics yet (a `params` record comes every few steps).</p>
      )}
      {sizes.modules.length > 0 ? (
        <table className="modules" data-testid="module-sizes">
          <caption className="sub-title">Parameters per module</caption>
          <tbody>
            {sizes.modules.slice(0, 6).map((m) => (
              <tr key={m.name}>
                <th scope="row">{m.name}</th>
                <td>{formatCompact(m.params)}</td>
                <td>{((100 * m.params) / (sizes.total || 1)).toFixed(1)} %</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {chosen ? (
        <div className="histogram">
          <label className="tool">
            <span>Weights of</span>
            <select
              value={chosen.histogram.name}
              data-testid="histogram-layer"
              onChange={(e) => {
                setLayer(e.target.value)
              }}
            >
              {names.map((name) => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
            <span className="tool-value">step {formatInt(chosen.step)}</span>
          </label>
          <HistogramChart histogram={chosen.histogram} color={run?.color ?? '#0072B2'} />
        </div>
      ) : null}
    </Card>
  )
}

function HistogramChart({ histogram, color }: { histogram: Histogram; color: string }) {
  const data = useMemo(() => {
    const labels = histogram.counts.map((_, i) => {
      const lo = histogram.edges[i] ?? 0
      const hi = histogram.edges[i + 1] ?? lo
      return formatValue((lo + hi) / 2)
    })
    return {
      labels,
      datasets: [
        {
          label: 'count',
          data: [...histogram.counts],
          backgroundColor: color,
          barPercentage: 1,
          categoryPercentage: 1,
        },
      ],
    }
  }, [histogram, color])
  const options = useMemo(
    (): ChartOptions<'bar'> => ({
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { title: (items) => `weight ≈ ${items[0]?.label ?? ''}` } },
      },
      scales: {
        x: { ticks: { maxTicksLimit: 7 } },
        y: { ticks: { maxTicksLimit: 4, callback: (v) => formatCompact(Number(v)) } },
      },
    }),
    [],
  )
  return (
    <div className="chart-box" style={{ height: 140 }}>
      <Bar
        data={data}
        options={options}
        updateMode="none"
        data-testid="chart-histogram"
        role="img"
        aria-label={`Histogram of ${histogram.name}`}
      />
    </div>
  )
}
