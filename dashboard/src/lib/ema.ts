/**
 * Debiased exponential moving average, as TensorBoard and Adam do it: m ← s·m + (1 − s)·v over the
 * finite values only, divided by the weight (1 − sⁿ) those n values carry, so the first points are not
 * pulled towards zero. A non-finite value (NaN, ±Inf, null) neither moves the average nor gets a smoothed
 * value (NaN: not drawn). s = 0 gives the values themselves.
 *
 * It smooths the differences from a reference value (the first finite one) and adds it back: the same
 * numbers in exact arithmetic, and a constant series comes back unchanged bit for bit.
 */
export class Ema {
  private readonly s: number
  private origin = Number.NaN
  private mean = 0
  private weight = 0

  constructor(s: number) {
    if (!(s >= 0 && s < 1)) throw new RangeError(`smoothing must be in [0, 1), got ${String(s)}`)
    this.s = s
  }

  /**
   * Carry on from a smoothed value that `count` finite values led to (the sidecar's last point): its
   * weight is 1 − sⁿ and, taken as the reference, its mean is 0.
   */
  static continuing(s: number, smoothed: number, count: number): Ema {
    const ema = new Ema(s)
    ema.origin = smoothed
    ema.weight = 1 - s ** count
    return ema
  }

  /** The smoothed value after `v` (NaN for a non-finite `v`, which changes nothing). */
  push(v: unknown): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) return Number.NaN
    if (this.s === 0) return v
    if (Number.isNaN(this.origin)) this.origin = v
    this.mean = this.s * this.mean + (1 - this.s) * (v - this.origin)
    this.weight = this.s * this.weight + (1 - this.s)
    return this.origin + this.mean / this.weight
  }
}

export function emaDebiased(values: ArrayLike<unknown>, s: number): number[] {
  const ema = new Ema(s)
  const out = new Array<number>(values.length)
  for (let i = 0; i < values.length; i++) out[i] = ema.push(values[i])
  return out
}
