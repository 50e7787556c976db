// Layers × steps, coloured on a log scale (viridis); the pointer (or focus and arrow keys) reads out
// the cell under it. Drawn on a plain canvas: thousands of cells, no chart library needed.
import { useEffect, useRef, useState, type KeyboardEvent, type MouseEvent } from 'react'
import { formatInt, formatValue } from '../../lib/format'
import { positiveRange, viridis, type Matrix } from './layerStats'

const GUTTER_MAX = 150
const HEIGHT = 220

export function Heatmap({ matrix, label, testId }: { matrix: Matrix; label: string; testId: string }) {
  const canvasRef = useRef<HTMLCanvasElement>(null)
  const [width, setWidth] = useState(0)
  const [cell, setCell] = useState<[number, number] | null>(null)
  const range = positiveRange(matrix)

  useEffect(() => {
    const canvas = canvasRef.current
    if (!canvas || typeof ResizeObserver === 'undefined') return undefined
    const observer = new ResizeObserver((entries) => {
      setWidth(Math.floor(entries[0]?.contentRect.width ?? 0))
    })
    observer.observe(canvas)
    return () => {
      observer.disconnect()
    }
  }, [])

  const gutter = Math.min(GUTTER_MAX, Math.floor(width * 0.35))
  const nRows = matrix.rows.length
  const nCols = matrix.cols.length

  useEffect(() => {
    const canvas = canvasRef.current
    const ctx = canvas?.getContext('2d')
    if (!canvas || !ctx || width === 0) return
    const dpr = window.devicePixelRatio || 1
    canvas.width = width * dpr
    canvas.height = HEIGHT * dpr
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
    ctx.clearRect(0, 0, width, HEIGHT)
    if (nRows === 0 || nCols === 0) return
    const cw = (width - gutter) / nCols
    const rh = HEIGHT / nRows
    const logLo = range ? Math.log10(range[0]) : 0
    const span = range ? Math.log10(range[1]) - logLo || 1 : 1
    matrix.values.forEach((row, r) => {
      row.forEach((v, c) => {
        ctx.fillStyle = v !== null && v > 0 ? viridis((Math.log10(v) - logLo) / span) : 'rgba(128, 128, 128, 0.25)'
        ctx.fillRect(gutter + c * cw, r * rh, Math.ceil(cw), Math.ceil(rh))
      })
    })
    const style = getComputedStyle(canvas)
    ctx.fillStyle = style.color
    ctx.font = '10px system-ui, sans-serif'
    ctx.textBaseline = 'middle'
    const every = Math.max(1, Math.ceil(11 / rh))
    for (let r = 0; r < nRows; r += every) {
      const name = shortName(matrix.rows[r] ?? '')
      ctx.fillText(fit(ctx, name, gutter - 6), 0, r * rh + rh / 2)
    }
  }, [matrix, width, gutter, nRows, nCols, range])

  const locate = (event: MouseEvent<HTMLCanvasElement>): void => {
    const rect = event.currentTarget.getBoundingClientRect()
    const x = event.clientX - rect.left - gutter
    const y = event.clientY - rect.top
    if (x < 0 || nCols === 0 || nRows === 0) {
      setCell(null)
      return
    }
    setCell([
      Math.min(nRows - 1, Math.floor((y / HEIGHT) * nRows)),
      Math.min(nCols - 1, Math.floor((x / (width - gutter)) * nCols)),
    ])
  }
  const move = (event: KeyboardEvent<HTMLCanvasElement>): void => {
    const [r, c] = cell ?? [0, nCols - 1]
    const next: Record<string, [number, number]> = {
      ArrowUp: [Math.max(0, r - 1), c],
      ArrowDown: [Math.min(nRows - 1, r + 1), c],
      ArrowLeft: [r, Math.max(0, c - 1)],
      ArrowRight: [r, Math.min(nCols - 1, c + 1)],
    }
    const to = next[event.key]
    if (to) {
      event.preventDefault()
      setCell(to)
    }
  }

  const value = cell ? matrix.values[cell[0]]?.[cell[1]] : undefined
  const readout = cell
    ? `${matrix.rows[cell[0]] ?? ''} · step ${formatInt(matrix.cols[cell[1]])} · ${label} ${value === null || value === undefined ? 'n/a' : formatValue(value)}`
    : 'Point at (or focus and use the arrow keys on) a cell to read it.'

  return (
    <div className="heatmap">
      <canvas
        ref={canvasRef}
        className="heatmap-canvas"
        style={{ height: HEIGHT }}
        data-testid={testId}
        data-rows={nRows}
        data-cols={nCols}
        tabIndex={0}
        role="img"
        aria-label={`${label} per layer over steps: ${String(nRows)} layers, ${String(nCols)} columns`}
        onMouseMove={locate}
        onMouseLeave={() => {
          setCell(null)
        }}
        onKeyDown={move}
      />
      <div className="heatmap-scale">
        <span>{range ? formatValue(range[0]) : '—'}</span>
        <span className="heatmap-gradient" aria-hidden="true" />
        <span>{range ? formatValue(range[1]) : '—'}</span>
        <span className="heatmap-scale-note">
          log scale · steps {formatInt(matrix.cols[0])}–{formatInt(matrix.cols[nCols - 1])}
        </span>
      </div>
      <p className="heatmap-readout" aria-live="polite">
        {readout}
      </p>
    </div>
  )
}

export function shortName(name: string): string {
  return name.replace(/\.weight$/, '').replace(/^blocks\./, 'b')
}

function fit(ctx: CanvasRenderingContext2D, text: string, width: number): string {
  if (ctx.measureText(text).width <= width) return text
  let t = text
  while (t.length > 1 && ctx.measureText(`…${t}`).width > width) t = t.slice(1)
  return `…${t}`
}
