// Chart.js, registered once: the pieces the cards use, no animation (live updates redraw in place), a
// hover mode that shows every visible series at the pointer's x, theme colours that follow the system
// setting, and `window.Chart`, so a browser test can read any chart with Chart.getChart(canvas).
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Interaction,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
  type ChartEvent,
  type InteractionItem,
  type InteractionModeFunction,
} from 'chart.js'
import { getRelativePosition } from 'chart.js/helpers'
import zoomPlugin from 'chartjs-plugin-zoom'

declare module 'chart.js' {
  interface InteractionModeMap {
    eachNearestX: InteractionModeFunction
  }
}

declare global {
  interface Window {
    Chart?: typeof Chart
  }
}

/** For each visible dataset, its point nearest the pointer in x (markers only when close). */
const eachNearestX: InteractionModeFunction = (chart, e: ChartEvent) => {
  const position = getRelativePosition(e, chart)
  const items: InteractionItem[] = []
  chart.data.datasets.forEach((dataset, datasetIndex) => {
    if (!chart.isDatasetVisible(datasetIndex)) return
    const tag = (dataset as { series?: { role?: string } }).series
    if (tag?.role === 'band-min' || tag?.role === 'band-max') return
    const meta = chart.getDatasetMeta(datasetIndex)
    const elements = meta.data
    if (elements.length === 0) return
    // elements are in x order: binary search for the pointer's x
    let lo = 0
    let hi = elements.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if ((elements[mid]?.x ?? 0) < position.x) lo = mid + 1
      else hi = mid
    }
    let best = lo
    const left = elements[lo - 1]
    const here = elements[lo]
    if (left && here && Math.abs(left.x - position.x) <= Math.abs(here.x - position.x)) best = lo - 1
    const element = elements[best]
    if (!element) return
    if (tag?.role === 'markers' && Math.abs(element.x - position.x) > 8) return
    items.push({ element, datasetIndex, index: best })
  })
  return items
}

let registered = false

export function setupCharts(): void {
  if (registered) return
  registered = true
  Chart.register(
    LineController,
    LineElement,
    PointElement,
    BarController,
    BarElement,
    LinearScale,
    LogarithmicScale,
    CategoryScale,
    Filler,
    Tooltip,
    zoomPlugin,
  )
  Interaction.modes.eachNearestX = eachNearestX
  Chart.defaults.animation = false
  Chart.defaults.maintainAspectRatio = false
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
  Chart.defaults.font.size = 12
  applyTheme()
  darkQuery()?.addEventListener('change', () => {
    applyTheme()
    for (const chart of Object.values(Chart.instances)) chart.update('none')
  })
  window.Chart = Chart
}

/** null where there is no matchMedia (jsdom) */
function darkQuery(): MediaQueryList | null {
  const matchMedia = (window as Partial<Window>).matchMedia
  return typeof matchMedia === 'function' ? matchMedia.call(window, '(prefers-color-scheme: dark)') : null
}

function applyTheme(): void {
  const dark = darkQuery()?.matches ?? false
  Chart.defaults.color = dark ? '#c9d1d9' : '#3d4450'
  Chart.defaults.borderColor = dark ? 'rgba(201, 209, 217, 0.14)' : 'rgba(30, 40, 60, 0.10)'
}
