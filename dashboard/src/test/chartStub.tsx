// jsdom has no canvas: tests replace react-chartjs-2 with this, which renders a bare <canvas> and keeps
// the last props each chart got, by its data-testid.
import type { ChartData } from 'chart.js'

export const chartProps = new Map<string, { data: ChartData }>()

interface StubProps {
  data: ChartData
  'data-testid'?: string
}

function Stub(props: StubProps) {
  const id = props['data-testid'] ?? 'chart'
  chartProps.set(id, { data: props.data })
  return <canvas data-testid={id} />
}

export const Line = Stub
export const Bar = Stub
