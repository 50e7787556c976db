export interface BackoffOptions {
  baseMs: number
  maxMs: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 15_000 }

/**
 * Delay before reconnect attempt `attempt` (0 for the first retry): exponential, capped, with "equal
 * jitter" — half the cap fixed, half random — so many pages that lost the same sidecar do not all come
 * back in the same millisecond, and none retries at once.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const cap = Math.min(options.maxMs, options.baseMs * 2 ** Math.max(0, attempt))
  return cap / 2 + random() * (cap / 2)
}
