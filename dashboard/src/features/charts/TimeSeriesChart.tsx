// A line chart over x (step, tokens or wall time) with drag-to-zoom on x, double-click (or the button)
// to reset, a tooltip listing every visible series at the pointer's x, and no animation. The parent
// memoises `datasets`; options are memoised here, so a redraw happens only when something changed.
import type { ChartOptions, TooltipItem } from 'chart.js'
import { useMemo, useRef } from 'react'
import { Line } from 'react-chartjs-2'
import { MARKER_STYLE } from '../../lib/palette'
import type { ChartPoint, LineDataset } from './datasets'
import { setupCharts } from './setup'

setupCharts()

export interface AxisFormat {
  title: string
  format: (value: number) => string
  /** tick positions for [min, max], where Chart.js's round numbers do not suit (wall time) */
  ticks?: (min: number, max: number) => number[]
}

export interface TimeSeriesChartProps {
  testId: string
  ariaLabel: string
  datasets: LineDataset[]
  x: AxisFormat
  y: AxisFormat
  y2?: AxisFormat & { min?: number; max?: number }
  yLog?: boolean
  range: readonly [number, number] | null
  onRangeChange?: (range: readonly [number, number] | null) => void
  height?: number
}

/**
 * A log axis gets a tick at every 1..9 × 10^k: over many decades (an fp16 loss scale) that is hundreds
 * of labels to lay out on every redraw. Keep 1-2-5 ticks, or only powers of ten (every k-th), at most 8.
 */
export function thinLogTicks(scale: { ticks: { value: number }[] }): void {
  if (scale.ticks.length <= 8) return
  const mantissa = (v: number): number => Math.round(v / 10 ** Math.floor(Math.log10(v) + 1e-9))
  const oneTwoFive = scale.ticks.filter((t) => [1, 2, 5].includes(mantissa(t.value)))
  if (oneTwoFive.length <= 8) {
    scale.ticks = oneTwoFive
    return
  }
  const decades = oneTwoFive.filter((t) => mantissa(t.value) === 1)
  const every = Math.ceil(decades.length / 8)
  scale.ticks = decades.filter((_, i) => i % every === 0)
}

type LineChart = import('chart.js').Chart<'line', ChartPoint[]>

export function TimeSeriesChart(props: TimeSeriesChartProps) {
  const { testId, ariaLabel, datasets, x, y, y2, yLog = false, range, onRangeChange, height = 220 } = props
  const chartRef = useRef<LineChart | null>(null)
  const data = useMemo(() => ({ datasets }), [datasets])
  const options = useMemo((): ChartOptions<'line'> => {
    const zoomable = onRangeChange !== undefined
    return {
      animation: false,
      parsing: false,
      normalized: true,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'eachNearestX', intersect: false },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (items: TooltipItem<'line'>[]) => {
              const first = items[0]
              return first ? `${x.title} ${x.format(first.parsed.x ?? 0)}` : ''
            },
            label: (item: TooltipItem<'line'>) => {
              const point = item.raw as ChartPoint
              const format = item.dataset.yAxisID === 'y2' && y2 ? y2.format : y.format
              if (point.kind) return `${item.dataset.label ?? ''}: ${MARKER_STYLE[point.kind].label}`
              const band =
                point.min !== undefined && point.max !== undefined && point.min !== point.max
                  ? ` (bucket ${format(point.min)} – ${format(point.max)})`
                  : ''
              return `${item.dataset.label ?? ''}: ${format(point.y)}${band}`
            },
          },
        },
        zoom: {
          zoom: {
            drag: {
              enabled: zoomable,
              backgroundColor: 'rgba(86, 180, 233, 0.18)',
              borderColor: '#0072B2',
              borderWidth: 1,
            },
            wheel: { enabled: false },
            pinch: { enabled: false },
            mode: 'x',
            onZoomComplete: ({ chart }) => {
              const scale = chart.scales.x
              if (scale) onRangeChange?.([scale.min, scale.max])
            },
          },
          pan: { enabled: false },
        },
      },
      scales: {
        x: {
          type: 'linear',
          min: range?.[0],
          max: range?.[1],
          ticks: { maxTicksLimit: 6, includeBounds: false, callback: (v) => x.format(Number(v)) },
          ...(x.ticks
            ? {
                afterBuildTicks: (scale: { min: number; max: number; ticks: { value: number }[] }) => {
                  scale.ticks = (x.ticks?.(scale.min, scale.max) ?? []).map((value) => ({ value }))
                },
              }
            : {}),
          title: { display: false, text: x.title },
        },
        y: {
          type: yLog ? 'logarithmic' : 'linear',
          ...(yLog ? { afterBuildTicks: thinLogTicks } : {}),
          ticks: { maxTicksLimit: 6, callback: (v) => y.format(Number(v)) },
          title: { display: false, text: y.title },
        },
        ...(y2
          ? {
              y2: {
                type: 'linear' as const,
                position: 'right' as const,
                min: y2.min,
                max: y2.max,
                grid: { drawOnChartArea: false },
                ticks: { maxTicksLimit: 6, callback: (v: number | string) => y2.format(Number(v)) },
              },
            }
          : {}),
      },
    }
  }, [x, y, y2, yLog, range, onRangeChange])

  const reset = (): void => {
    chartRef.current?.resetZoom('none')
    onRangeChange?.(null)
  }

  return (
    <div className="chart-wrap">
      <div className="chart-box" style={{ height }} onDoubleClick={onRangeChange ? reset : undefined}>
        <Line
          ref={chartRef}
          data={data}
          options={options}
          updateMode="none"
          datasetIdKey="id"
          data-testid={testId}
          role="img"
          aria-label={ariaLabel}
        />
      </div>
      {range && onRangeChange ? (
        <button type="button" className="link-button reset-zoom" onClick={reset}>
          Reset zoom
        </button>
      ) : null}
    </div>
  )
}
