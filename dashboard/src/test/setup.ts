// jsdom has no canvas: the charts are stubbed where a test renders them (see chartStub.tsx).
import { cleanup } from '@testing-library/react'
import { afterEach } from 'vitest'

afterEach(() => {
  cleanup()
})
