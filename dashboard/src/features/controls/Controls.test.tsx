import { act, fireEvent, render, screen } from '@testing-library/react'
import { describe, expect, it, vi } from 'vitest'
import { runInfo } from '../../test/fakeSocket'
import type { ControlRecord, ControlRequest } from '../../types/protocol'
import type { ControlResult } from '../../lib/api'
import { Controls, type ControlsProps } from './Controls'
import { commandView, NO_TOKEN_MESSAGE, parseLrScale, reduceCommands } from './controlState'

function ack(
  id: string,
  action: ControlRecord['action'],
  status: ControlRecord['status'],
  step: number,
  extra: Partial<ControlRecord> = {},
): ControlRecord {
  return { type: 'control', run_id: 'run-a', seq: 100 + step, time: 0, command_id: id, action, status, step, ...extra }
}

function setup(overrides: Partial<ControlsProps> = {}) {
  const post = vi.fn<(runId: string, body: ControlRequest, token: string) => Promise<ControlResult>>(() =>
    Promise.resolve({ ok: true, id: 'cmd-1' }),
  )
  const props: ControlsProps = {
    run: runInfo('run-a'),
    runName: 'demo',
    step: 42,
    token: 'tok',
    controls: new Map(),
    offReason: null,
    post,
    ...overrides,
  }
  const view = render(<Controls {...props} />)
  const rerender = (controls: Map<string, ControlRecord>, more: Partial<ControlsProps> = {}) => {
    view.rerender(<Controls {...props} {...more} controls={controls} />)
  }
  return { post, rerender }
}

const status = (action: string) => screen.getByTestId(`control-status-${action}`)

describe('control state', () => {
  it('moves sending -> pending -> applied / rejected by command id', () => {
    let state = reduceCommands({}, { type: 'send', action: 'pause' })
    expect(commandView('pause', state.pause, new Map())?.phase).toBe('sending')
    state = reduceCommands(state, { type: 'accepted', action: 'pause', id: 'c1' })
    expect(commandView('pause', state.pause, new Map())?.phase).toBe('pending')
    // an acknowledgement of another command changes nothing
    expect(commandView('pause', state.pause, new Map([['c0', ack('c0', 'pause', 'applied', 3)]]))?.phase).toBe(
      'pending',
    )
    const applied = commandView('pause', state.pause, new Map([['c1', ack('c1', 'pause', 'applied', 7)]]))
    expect(applied).toMatchObject({ phase: 'applied', step: 7, text: 'applied at step 7' })
    const rejected = commandView(
      'pause',
      state.pause,
      new Map([['c1', ack('c1', 'pause', 'rejected', 7, { detail: 'already paused' })]]),
    )
    expect(rejected).toMatchObject({ phase: 'rejected', text: 'rejected at step 7: already paused' })
  })

  it('ignores a late answer for a command that is no longer sending', () => {
    let state = reduceCommands({}, { type: 'send', action: 'save' })
    state = reduceCommands(state, { type: 'failed', action: 'save', message: 'x' })
    expect(reduceCommands(state, { type: 'accepted', action: 'save', id: 'late' })).toBe(state)
  })

  it('accepts only a positive finite LR multiplier', () => {
    expect(parseLrScale('0.5')).toEqual({ ok: true, value: 0.5 })
    expect(parseLrScale('0').ok).toBe(false)
    expect(parseLrScale('-1').ok).toBe(false)
    expect(parseLrScale('abc').ok).toBe(false)
    expect(parseLrScale('').ok).toBe(false)
  })
})

describe('<Controls>', () => {
  it('Pause shows pending until the run acknowledges it, then the step it applied at', async () => {
    const { post, rerender } = setup()
    fireEvent.click(screen.getByTestId('control-pause'))
    expect(post).toHaveBeenCalledWith('run-a', { action: 'pause' }, 'tok')
    await screen.findByText(/Pause: pending/)
    expect(status('pause').dataset.phase).toBe('pending')
    rerender(new Map([['cmd-1', ack('cmd-1', 'pause', 'applied', 42)]]))
    expect(status('pause').textContent).toBe('Pause: applied at step 42')
    expect(status('pause').dataset.phase).toBe('applied')
  })

  it('shows a rejection inline', async () => {
    const { rerender } = setup()
    fireEvent.click(screen.getByTestId('control-save'))
    await screen.findByText(/Save: pending/)
    rerender(new Map([['cmd-1', ack('cmd-1', 'save', 'rejected', 9, { detail: 'a save is already running' })]]))
    expect(status('save').textContent).toBe('Save: rejected at step 9: a save is already running')
  })

  it('without a token says so beside the buttons and sends nothing', () => {
    const { post } = setup({ token: null })
    fireEvent.click(screen.getByTestId('control-save'))
    expect(post).not.toHaveBeenCalled()
    expect(status('save').textContent).toBe(`Save: ${NO_TOKEN_MESSAGE}`)
    expect(status('save').dataset.phase).toBe('error')
    expect(screen.queryByRole('alert')).toBeNull()
  })

  it('shows the sidecar refusing the command (run not live)', async () => {
    const { post } = setup()
    post.mockResolvedValueOnce({ ok: false, status: 409, message: 'the run is not live (ended or not reporting)' })
    fireEvent.click(screen.getByTestId('control-pause'))
    await screen.findByText('Pause: the run is not live (ended or not reporting)')
  })

  it('Stop asks first, naming the run and the step; cancel sends nothing, confirm sends stop', async () => {
    const { post } = setup()
    fireEvent.click(screen.getByTestId('control-stop'))
    const dialog = screen.getByTestId('stop-dialog')
    expect(dialog.textContent).toContain('demo')
    expect(dialog.textContent).toContain('run-a')
    expect(dialog.textContent).toContain('step 42')
    expect(document.activeElement).toBe(screen.getByTestId('stop-cancel'))
    fireEvent.click(screen.getByTestId('stop-cancel'))
    expect(screen.queryByTestId('stop-dialog')).toBeNull()
    expect(post).not.toHaveBeenCalled()

    fireEvent.click(screen.getByTestId('control-stop'))
    fireEvent.keyDown(document, { key: 'Escape' })
    expect(screen.queryByTestId('stop-dialog')).toBeNull()

    fireEvent.click(screen.getByTestId('control-stop'))
    fireEvent.click(screen.getByTestId('stop-confirm'))
    expect(post).toHaveBeenCalledWith('run-a', { action: 'stop' }, 'tok')
    await screen.findByText(/Stop: pending/)
  })

  it('set_lr sends the multiplier, refuses a bad one inline, and shows the scale applied', async () => {
    const { post, rerender } = setup()
    const input = screen.getByTestId('lr-scale-input')
    fireEvent.change(input, { target: { value: '-2' } })
    fireEvent.click(screen.getByTestId('control-set-lr'))
    expect(post).not.toHaveBeenCalled()
    expect(screen.getByTestId('lr-scale-error').textContent).toContain('above 0')
    fireEvent.change(input, { target: { value: '0.5' } })
    fireEvent.click(screen.getByTestId('control-set-lr'))
    expect(post).toHaveBeenCalledWith('run-a', { action: 'set_lr', lr_scale: 0.5 }, 'tok')
    await screen.findByText(/LR: pending/)
    rerender(new Map([['cmd-1', ack('cmd-1', 'set_lr', 'applied', 50, { lr_scale: 0.5 })]]))
    expect(status('set_lr').textContent).toBe('LR: ×0.5 applied at step 50')
  })

  it('controls of an ended run are off, with the reason on hover and on the page', () => {
    const reason = 'controls are off: the run finished'
    const { post } = setup({ offReason: reason, run: runInfo('run-a', { state: 'finished', live: false }) })
    for (const id of ['control-pause', 'control-resume', 'control-save', 'control-set-lr', 'control-stop']) {
      const button = screen.getByTestId(id)
      expect(button.getAttribute('aria-disabled')).toBe('true')
      expect(button.getAttribute('title')).toBe(reason)
      fireEvent.click(button)
    }
    expect(post).not.toHaveBeenCalled()
    expect(screen.queryByTestId('stop-dialog')).toBeNull()
    expect(screen.getByText(reason)).toBeTruthy()
  })

  it('pause is off while paused and resume while running', () => {
    setup({ run: runInfo('run-a', { state: 'paused' }) })
    expect(screen.getByTestId('control-pause').getAttribute('aria-disabled')).toBe('true')
    expect(screen.getByTestId('control-resume').getAttribute('aria-disabled')).toBeNull()
  })

  it('a second click while a command is pending sends nothing', async () => {
    const { post } = setup()
    fireEvent.click(screen.getByTestId('control-save'))
    await screen.findByText(/Save: pending/)
    await act(async () => {
      fireEvent.click(screen.getByTestId('control-save'))
      await Promise.resolve()
    })
    expect(post).toHaveBeenCalledTimes(1)
  })
})
