import { describe, expect, it, vi } from 'vitest'
import { backoffDelay } from './backoff'
import { formatCompact, formatDuration, formatFixed, formatInt, formatPercent, formatValue } from './format'
import { finiteOrNull, nonFiniteKind, parseJsonLenient } from './json'
import { takeTokenFromUrl, TOKEN_KEY } from './token'

describe('format', () => {
  it('uses thousands separators, units and sensible precision', () => {
    expect(formatInt(8829.4)).toBe('8,829')
    expect(formatPercent(0.388)).toBe('38.8 %')
    expect(formatValue(3.85213)).toBe('3.852')
    expect(formatValue(12345.6)).toBe('12,346')
    expect(formatValue(0.00012)).toBe('1.20e-4')
    expect(formatFixed(1234.5, 1)).toBe('1,234.5')
    expect(formatCompact(4_560_000)).toBe('4.56 M')
    expect(formatDuration(245)).toBe('4 min 05 s')
    expect(formatDuration(3 * 3600 + 7 * 60)).toBe('3 h 07 min')
    expect(formatInt(null)).toBe('—')
    expect(formatValue(Number.NaN)).toBe('NaN')
  })
})

describe('backoffDelay', () => {
  it('grows exponentially to the cap, jittered within its upper half', () => {
    const opts = { baseMs: 500, maxMs: 15_000 }
    expect(backoffDelay(0, opts, () => 0)).toBe(250)
    expect(backoffDelay(0, opts, () => 1)).toBe(500)
    expect(backoffDelay(3, opts, () => 0)).toBe(2000)
    expect(backoffDelay(30, opts, () => 1)).toBe(15_000)
  })
})

describe('parseJsonLenient', () => {
  it('parses plain JSON and reads bare NaN/Infinity as strings', () => {
    expect(parseJsonLenient('{"a": 1}')).toEqual({ a: 1 })
    expect(parseJsonLenient('{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN text"}')).toEqual({
      a: 'NaN',
      b: ['Infinity', '-Infinity'],
      c: 'NaN text',
    })
    expect(() => parseJsonLenient('{oops')).toThrow(SyntaxError)
  })

  it('classifies what is not a finite number', () => {
    expect(finiteOrNull(1.5)).toBe(1.5)
    expect(finiteOrNull(null)).toBeNull()
    expect(finiteOrNull('NaN')).toBeNull()
    expect(nonFiniteKind(2)).toBeNull()
    expect(nonFiniteKind(null)).toBe('nan')
    expect(nonFiniteKind('Infinity')).toBe('inf')
    expect(nonFiniteKind(-Infinity)).toBe('-inf')
  })
})

describe('takeTokenFromUrl', () => {
  const storage = (): Storage => {
    const map = new Map<string, string>()
    return {
      getItem: (k: string) => map.get(k) ?? null,
      setItem: (k: string, v: string) => map.set(k, v),
    } as unknown as Storage
  }

  it('keeps the fragment token in sessionStorage and strips it from the address', () => {
    const store = storage()
    const history = { state: null, replaceState: vi.fn() }
    const token = takeTokenFromUrl({ hash: '#token=s3cret&x=1', pathname: '/', search: '?run=a' }, history, store)
    expect(token).toBe('s3cret')
    expect(store.getItem(TOKEN_KEY)).toBe('s3cret')
    expect(history.replaceState).toHaveBeenCalledWith(null, '', '/?run=a#x=1')
  })

  it('falls back to the stored token, and to null', () => {
    const store = storage()
    const history = { state: null, replaceState: vi.fn() }
    expect(takeTokenFromUrl({ hash: '', pathname: '/', search: '' }, history, store)).toBeNull()
    store.setItem(TOKEN_KEY, 'kept')
    expect(takeTokenFromUrl({ hash: '', pathname: '/', search: '' }, history, store)).toBe('kept')
    expect(history.replaceState).not.toHaveBeenCalled()
  })
})
