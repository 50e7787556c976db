/**
 * Debiased exponential moving average, as TensorBoard and Adam do it: m ← s·m + (1 − s)·v over the
 * finite values only, divided by the weight (1 − sⁿ) those n values carry, so the first points are not
 * pulled towards zero. A non-finite value (NaN, ±Inf, null) neither moves the average nor gets a smoothed
 * value (NaN in the output: not drawn). s = 0 returns the values themselves.
 *
 * It smooths the differences from the first finite value and adds that value back: the same numbers in
 * exact arithmetic, and a constant series comes back unchanged bit for bit.
 */
export function emaDebiased(values: ArrayLike<number | null | undefined>, s: number): number[] {
  if (!(s >= 0 && s < 1)) throw new RangeError(`smoothing must be in [0, 1), got ${String(s)}`)
  const out = new Array<number>(values.length)
  let origin = Number.NaN
  let mean = 0
  let weight = 0
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      out[i] = Number.NaN
      continue
    }
    if (Number.isNaN(origin)) origin = v
    mean = s * mean + (1 - s) * (v - origin)
    weight = s * weight + (1 - s)
    out[i] = origin + mean / weight
  }
  return out
}
