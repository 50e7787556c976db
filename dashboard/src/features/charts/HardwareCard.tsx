// Per device load from `system` records: a GPU each (NVML), or each rank's share of the CPU where
// there is no GPU. The latest figures as bars, utilisation over steps as lines.
import { useMemo } from 'react'
import { BigNumber } from '../../components/BigNumber'
import { Card } from '../../components/Card'
import { Legend } from '../../components/Legend'
import { formatFixed, formatInt } from '../../lib/format'
import { runColor } from '../../lib/palette'
import type { DeviceStats } from '../../types/schema'
import { arraySeries, bucketLocally } from '../series/seriesView'
import { lastOf } from '../stream/runData'
import { PERCENT_AXIS, X_AXES } from './axes'
import type { ChartRun } from './chartRuns'
import { seriesDatasets, type LineDataset } from './datasets'
import { TimeSeriesChart } from './TimeSeriesChart'

export function deviceKey(d: DeviceStats): string {
  return `${d.node}|${d.kind}|${String(d.index)}|${String(d.rank)}`
}

/** "GPU 0" or "rank 1 (CPU)", with the node's name first when the run spans several nodes. */
export function deviceLabel(d: DeviceStats, showNode: boolean): string {
  const device = d.kind === 'gpu' ? `GPU ${String(d.index)}` : `rank ${String(d.rank)} (CPU)`
  return showNode ? `${d.node} ${device}` : device
}

function mean(values: readonly (number | null | undefined)[]): number | null {
  const finite = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v))
  return finite.length > 0 ? finite.reduce((a, b) => a + b, 0) / finite.length : null
}

export function HardwareCard({ run }: { run: ChartRun | null }) {
  const systems = run?.local?.system
  const version = run?.version ?? 0
  const latest = systems ? lastOf(systems) : undefined
  const devices = useMemo(() => latest?.devices ?? [], [latest])
  const nodes = [...new Set(devices.map((d) => d.node))]
  const showNode = nodes.length > 1

  const datasets = useMemo(() => {
    const out: LineDataset[] = []
    if (!systems) return out
    const runId = run.info.run_id
    devices.forEach((device, i) => {
      const key = deviceKey(device)
      const xs: number[] = []
      const values: unknown[] = []
      for (const record of systems) {
        const d = record.devices.find((candidate) => deviceKey(candidate) === key)
        if (!d) continue
        xs.push(record.step)
        values.push(d.utilization)
      }
      const view = bucketLocally(arraySeries(xs, values), { buckets: 400, smoothing: 0 })
      out.push(
        ...seriesDatasets(view, {
          runId,
          key: `util:${key}`,
          label: deviceLabel(device, showNode),
          color: runColor(i),
          smoothing: 0,
        }),
      )
    })
    return out
    // version stands for the records in `systems`
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version, devices, showNode, run?.info.run_id])

  const util = mean(devices.map((d) => d.utilization))
  const memUsed = devices.reduce((a, d) => a + (d.memory_used_gb ?? 0), 0)
  const gpus = devices.filter((d) => d.kind === 'gpu')
  const memTotal = gpus.length > 0 ? gpus.reduce((a, d) => a + (d.memory_total_gb ?? 0), 0) : null

  return (
    <Card
      id="hardware"
      title="Hardware"
      numbers={
        <>
          <BigNumber
            label={`mean utilisation, ${String(devices.length)} ${gpus.length > 0 ? 'GPUs' : 'ranks'}${nodes.length === 1 ? ` on ${nodes[0] ?? ''}` : ''}`}
            value={formatFixed(util, 0)}
            unit="%"
            testId="value-utilization"
          />
          <BigNumber
            label={gpus.length > 0 ? 'GPU memory in use' : 'resident memory, all ranks'}
            value={formatFixed(memUsed, 1)}
            unit={memTotal ? `/ ${formatFixed(memTotal, 0)} GB` : 'GB'}
            testId="value-memory"
            size="medium"
          />
        </>
      }
      footer={
        devices.length > 0 ? (
          <Legend
            entries={devices.map((d, i) => ({
              label: deviceLabel(d, showNode),
              color: runColor(i),
              kind: 'line' as const,
            }))}
          />
        ) : (
          <p className="card-note">No system records yet: the run sends one every few steps.</p>
        )
      }
    >
      {devices.length > 0 ? (
        <div className="devices-wrap">
          <table className="devices" data-testid="device-table">
            <thead>
              <tr>
                <th scope="col">device</th>
                <th scope="col">util</th>
                <th scope="col">memory</th>
                <th scope="col">temp</th>
                <th scope="col">power</th>
              </tr>
            </thead>
            <tbody>
              {devices.map((d) => (
                <tr key={deviceKey(d)}>
                  <th scope="row" title={d.name}>
                    {deviceLabel(d, showNode)}
                  </th>
                  <td>
                    <Meter
                      fraction={d.utilization === null ? null : d.utilization / 100}
                      text={d.utilization === null ? '—' : `${formatInt(d.utilization)} %`}
                    />
                  </td>
                  <td>
                    <Meter
                      fraction={
                        d.memory_used_gb !== null && d.memory_total_gb ? d.memory_used_gb / d.memory_total_gb : null
                      }
                      text={
                        d.memory_used_gb === null
                          ? '—'
                          : `${formatFixed(d.memory_used_gb, 1)}${d.memory_total_gb ? `/${formatFixed(d.memory_total_gb, 0)}` : ''} GB`
                      }
                    />
                  </td>
                  <td>{d.temperature_c == null ? '—' : `${formatInt(d.temperature_c)} °C`}</td>
                  <td>{d.power_w == null ? '—' : `${formatInt(d.power_w)} W`}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <TimeSeriesChart
        testId="chart-hardware"
        ariaLabel="Utilisation of each device by step"
        datasets={datasets}
        x={X_AXES.step}
        y={PERCENT_AXIS}
        range={null}
        height={150}
      />
    </Card>
  )
}

function Meter({ fraction, text }: { fraction: number | null; text: string }) {
  const pct = fraction === null ? 0 : Math.max(0, Math.min(1, fraction)) * 100
  return (
    <span className="meter">
      <span className="meter-bar" aria-hidden="true">
        <span className="meter-fill" style={{ width: `${String(pct)}%` }} />
      </span>
      <span className="meter-text">{text}</span>
    </span>
  )
}
