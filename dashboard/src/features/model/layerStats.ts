// Per-layer statistics from `params` records: a layers × steps matrix for the heatmap (each column the
// largest value of the records it stands for, so a spike is never averaged away), and the model's
// parameter count per module.
import type { ParamsRecord } from '../../types/protocol'
import type { LayerStats } from '../../types/schema'

export type LayerMetric = 'grad_norm' | 'update_ratio' | 'weight_norm'

export const METRIC_LABEL: Record<LayerMetric, string> = {
  grad_norm: 'gradient norm',
  update_ratio: 'update / weight',
  weight_norm: 'weight norm',
}

export interface Matrix {
  rows: string[]
  /** the last step each column covers */
  cols: number[]
  /** values[row][col]; null where the layer had no finite value */
  values: (number | null)[][]
}

export function layerMatrix(records: readonly ParamsRecord[], metric: LayerMetric, maxCols = 160): Matrix {
  const rows: string[] = []
  const rowOf = new Map<string, number>()
  for (const record of records) {
    for (const layer of record.layers) {
      if (!rowOf.has(layer.name)) {
        rowOf.set(layer.name, rows.length)
        rows.push(layer.name)
      }
    }
  }
  const group = Math.max(1, Math.ceil(records.length / maxCols))
  const cols: number[] = []
  const values: (number | null)[][] = rows.map(() => [])
  for (let start = 0; start < records.length; start += group) {
    const col = cols.length
    for (const row of values) row.push(null)
    let lastStep = 0
    for (const record of records.slice(start, start + group)) {
      lastStep = record.step
      for (const layer of record.layers) {
        const v = layer[metric]
        const r = rowOf.get(layer.name)
        if (r === undefined || typeof v !== 'number' || !Number.isFinite(v)) continue
        const row = values[r]
        if (!row) continue
        const current = row[col]
        row[col] = current === null || current === undefined ? v : Math.max(current, v)
      }
    }
    cols.push(lastStep)
  }
  return { rows, cols, values }
}

/** The smallest and largest positive finite values (the heatmap's log colour scale), or null. */
export function positiveRange(matrix: Matrix): [number, number] | null {
  let lo = Infinity
  let hi = -Infinity
  for (const row of matrix.values) {
    for (const v of row) {
      if (v === null || !(v > 0)) continue
      lo = Math.min(lo, v)
      hi = Math.max(hi, v)
    }
  }
  return lo <= hi ? [lo, hi] : null
}

// viridis at 9 stops: perceptually even and readable for colour-blind viewers
const VIRIDIS = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
] as const

export function viridis(t: number): string {
  const x = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1)
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x))
  const f = x - i
  const a = VIRIDIS[i] ?? VIRIDIS[0]
  const b = VIRIDIS[i + 1] ?? VIRIDIS[0]
  const mix = (k: 0 | 1 | 2): number => Math.round(a[k] + (b[k] - a[k]) * f)
  return `rgb(${String(mix(0))}, ${String(mix(1))}, ${String(mix(2))})`
}

export interface ModuleSize {
  name: string
  params: number
  tensors: number
}

/** Parameters per top-level module; numbered blocks (blocks.0, blocks.1, ...) counted as one group. */
export function moduleSizes(layers: readonly LayerStats[]): { total: number; modules: ModuleSize[]; blocks: number } {
  const modules = new Map<string, ModuleSize>()
  const blockIds = new Set<string>()
  let total = 0
  for (const layer of layers) {
    total += layer.numel
    const parts = layer.name.split('.')
    let name = parts[0] ?? layer.name
    if (parts.length > 2 && /^\d+$/.test(parts[1] ?? '')) {
      blockIds.add(`${name}.${parts[1] ?? ''}`)
      name = `${name}.*`
    }
    const entry = modules.get(name) ?? { name, params: 0, tensors: 0 }
    entry.params += layer.numel
    entry.tensors += 1
    modules.set(name, entry)
  }
  return { total, modules: [...modules.values()].sort((a, b) => b.params - a.params), blocks: blockIds.size }
}
