import { useEffect, useMemo, useSyncExternalStore } from 'react'
import { LiveRun, type LiveSnapshot } from './liveRun'

const idle = new LiveRun('')

/** Follow one run live while mounted (null: none). */
export function useLiveRun(runId: string | null): { snapshot: LiveSnapshot; live: LiveRun | null } {
  // made here, started and stopped by the effect (which StrictMode may run twice: it restarts)
  const live = useMemo(() => (runId === null ? null : new LiveRun(runId)), [runId])
  useEffect(() => {
    if (!live) return undefined
    live.start()
    const online = (): void => {
      live.reconnectNow()
    }
    window.addEventListener('online', online)
    return () => {
      window.removeEventListener('online', online)
      live.stop()
    }
  }, [live])
  const source = live ?? idle
  const snapshot = useSyncExternalStore(source.subscribe, source.getSnapshot)
  return { snapshot, live }
}
