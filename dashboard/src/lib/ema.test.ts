import { describe, expect, it } from 'vitest'
import { emaDebiased } from './ema'

describe('emaDebiased', () => {
  it('is debiased: the first value comes back as itself, not pulled towards zero', () => {
    const out = emaDebiased([10, 10, 20], 0.9)
    expect(out[0]).toBe(10)
    expect(out[1]).toBe(10)
    // m = 0.9*(0.1*0 + ...) on differences from 10: (0.1*10) / (1 - 0.9^3) = 1 / 0.271
    expect(out[2]).toBeCloseTo(10 + 1 / 0.271, 12)
  })

  it('matches the textbook form m_t / (1 - s^t)', () => {
    const values = [3.2, 2.9, 3.5, 2.1, 2.4, 1.9, 2.2]
    const s = 0.6
    let m = 0
    const expected = values.map((v, i) => {
      m = s * m + (1 - s) * v
      return m / (1 - s ** (i + 1))
    })
    const out = emaDebiased(values, s)
    out.forEach((v, i) => {
      expect(v).toBeCloseTo(expected[i] ?? Number.NaN, 12)
    })
  })

  it('leaves a constant series unchanged, bit for bit', () => {
    for (const c of [3.852, 0.1, 1e-7, 65536]) {
      const values = Array.from({ length: 500 }, () => c)
      for (const s of [0, 0.6, 0.99]) expect(emaDebiased(values, s)).toEqual(values)
    }
  })

  it('skips non-finite values: they get no smoothed value and do not move the average', () => {
    const clean = emaDebiased([1, 2, 3, 4], 0.5)
    const dirty = emaDebiased([1, Number.NaN, 2, null, 3, Infinity, 4, -Infinity], 0.5)
    expect(dirty.filter((v) => !Number.isNaN(v))).toEqual(clean)
    expect(Number.isNaN(dirty[1])).toBe(true)
    expect(Number.isNaN(dirty[3])).toBe(true)
    expect(Number.isNaN(dirty[5])).toBe(true)
  })

  it('s = 0 is the raw series; s outside [0, 1) is refused', () => {
    expect(emaDebiased([5, 1, 7], 0)).toEqual([5, 1, 7])
    expect(() => emaDebiased([1], 1)).toThrow(RangeError)
    expect(() => emaDebiased([1], -0.1)).toThrow(RangeError)
  })
})
