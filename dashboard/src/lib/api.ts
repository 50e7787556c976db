// The sidecar's HTTP API (docs/dashboard.md). Same origin as the page: the sidecar serves both.
import type {
  ControlAccepted,
  ControlRequest,
  MetricRecord,
  MetricsResponse,
  RunsResponse,
  SeriesResponse,
  SeriesX,
} from '../types/protocol'
import { parseJsonLenient } from './json'

export class HttpError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  const response = await fetch(url, { signal: signal ?? null, headers: { Accept: 'application/json' } })
  const text = await response.text()
  if (!response.ok) throw new HttpError(response.status, errorText(text, response.statusText))
  return parseJsonLenient(text) as T
}

function errorText(body: string, fallback: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown; detail?: unknown; message?: unknown }
    const message = parsed.error ?? parsed.detail ?? parsed.message
    if (typeof message === 'string' && message) return message
  } catch {
    // not JSON: the body itself, if short
  }
  const trimmed = body.trim()
  return trimmed && trimmed.length < 300 ? trimmed : fallback
}

const runPath = (runId: string): string => `/api/runs/${encodeURIComponent(runId)}`

export function getRuns(signal?: AbortSignal): Promise<RunsResponse> {
  return getJson<RunsResponse>('/api/runs', signal)
}

export async function getMetrics(runId: string, since: number, signal?: AbortSignal): Promise<MetricRecord[]> {
  const body = await getJson<MetricsResponse>(`${runPath(runId)}/metrics?since=${String(since)}`, signal)
  return body.records
}

export interface SeriesQuery {
  key: string
  x: SeriesX
  buckets: number
  smoothing: number
  xMin?: number | undefined
  xMax?: number | undefined
}

export function seriesUrl(runId: string, q: SeriesQuery): string {
  const params = new URLSearchParams({
    key: q.key,
    x: q.x,
    buckets: String(q.buckets),
    smoothing: String(q.smoothing),
  })
  if (q.xMin !== undefined) params.set('x_min', String(q.xMin))
  if (q.xMax !== undefined) params.set('x_max', String(q.xMax))
  return `${runPath(runId)}/series?${params.toString()}`
}

export function getSeries(runId: string, q: SeriesQuery, signal?: AbortSignal): Promise<SeriesResponse> {
  return getJson<SeriesResponse>(seriesUrl(runId, q), signal)
}

export type ControlResult = { ok: true; id: string } | { ok: false; status: number; message: string }

/** POST a command. Never throws: a refusal comes back as { ok: false } with a sentence for the page. */
export async function postControl(runId: string, body: ControlRequest, token: string): Promise<ControlResult> {
  let response: Response
  try {
    response = await fetch(`${runPath(runId)}/control`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })
  } catch {
    return { ok: false, status: 0, message: 'the sidecar did not answer' }
  }
  const text = await response.text()
  if (response.ok) {
    try {
      const accepted = JSON.parse(text) as ControlAccepted
      if (typeof accepted.id === 'string') return { ok: true, id: accepted.id }
    } catch {
      // fall through
    }
    return { ok: false, status: response.status, message: 'the sidecar answered without a command id' }
  }
  return { ok: false, status: response.status, message: controlRefusal(response.status, errorText(text, '')) }
}

function controlRefusal(status: number, detail: string): string {
  switch (status) {
    case 401:
    case 403:
      return 'token refused: open the URL the sidecar printed (…/#token=…)'
    case 409:
      return detail ? `run not live: ${detail}` : 'the run is not live (ended or not reporting)'
    case 400:
      return detail ? `bad command: ${detail}` : 'bad command'
    default:
      return detail ? `HTTP ${String(status)}: ${detail}` : `HTTP ${String(status)}`
  }
}

export function dashboardSocketUrl(
  base: Pick<Location, 'protocol' | 'host'>,
  runId: string,
  since: number,
  epoch: string | null,
): string {
  const scheme = base.protocol === 'https:' ? 'wss:' : 'ws:'
  const params = new URLSearchParams({ run: runId, since: String(since) })
  if (epoch !== null) params.set('epoch', epoch)
  return `${scheme}//${base.host}/ws/dashboard?${params.toString()}`
}
