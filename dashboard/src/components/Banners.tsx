import { formatDuration } from '../lib/format'
import { useNow } from '../lib/useNow'
import type { StreamStatus } from '../features/stream/RunStream'

export function DisconnectedBanner({ status, onRetry }: { status: StreamStatus; onRetry: () => void }) {
  const now = useNow(1000)
  const since = status.lastRecordAt !== null ? formatDuration((now - status.lastRecordAt) / 1000) : null
  const retryIn = status.nextRetryAt !== null ? Math.max(0, Math.ceil((status.nextRetryAt - now) / 1000)) : null
  return (
    <div className="banner banner-warn" role="status" data-testid="disconnected-banner">
      <span className="spinner" aria-hidden="true" />
      <span>
        <strong>Disconnected from the sidecar.</strong> {since !== null ? <>Last record {since} ago. </> : null}
        {retryIn !== null ? (
          <>
            Reconnecting in {retryIn} s (attempt {status.attempt}).
          </>
        ) : (
          <>Reconnecting…</>
        )}{' '}
        The charts keep what they have and fill in the gap when it is back.
      </span>
      <button type="button" className="link-button" onClick={onRetry}>
        Reconnect now
      </button>
    </div>
  )
}

export function UnreachableBanner({ error }: { error: string }) {
  return (
    <div className="banner banner-warn" role="status" data-testid="unreachable-banner">
      <span className="spinner" aria-hidden="true" />
      <span>
        <strong>Cannot reach the sidecar</strong> at {window.location.host} ({error}). Retrying every few seconds; is{' '}
        <code>python -m llm.sidecar</code> running?
      </span>
    </div>
  )
}

export function ReloadingBanner() {
  return (
    <div className="banner banner-info" role="status" data-testid="reloading-banner">
      <span className="spinner" aria-hidden="true" />
      The sidecar restarted: reloading the run&apos;s history, then carrying on live.
    </div>
  )
}
