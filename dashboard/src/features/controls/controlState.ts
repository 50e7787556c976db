// Each command's life on the page: sending (the POST is on its way) → pending (the sidecar gave it an
// id; the run has not acknowledged it) → applied at step N or rejected, when the `control` record
// with that command_id arrives. A refused POST (no token, run not live) ends as an error at once.
import { formatInt } from '../../lib/format'
import type { ControlAction, ControlRecord } from '../../types/protocol'

export interface LocalCommand {
  phase: 'sending' | 'pending' | 'error'
  commandId?: string
  message?: string
  lrScale?: number
}

export type LocalCommands = Partial<Record<ControlAction, LocalCommand>>

export type CommandEvent =
  | { type: 'send'; action: ControlAction; lrScale?: number }
  | { type: 'accepted'; action: ControlAction; id: string }
  | { type: 'failed'; action: ControlAction; message: string }

export function reduceCommands(state: LocalCommands, event: CommandEvent): LocalCommands {
  const current = state[event.action]
  switch (event.type) {
    case 'send':
      return {
        ...state,
        [event.action]: { phase: 'sending', ...(event.lrScale !== undefined ? { lrScale: event.lrScale } : {}) },
      }
    case 'accepted':
      if (current?.phase !== 'sending') return state
      return { ...state, [event.action]: { ...current, phase: 'pending', commandId: event.id } }
    case 'failed':
      if (current?.phase !== 'sending') return state
      return { ...state, [event.action]: { ...current, phase: 'error', message: event.message } }
    default:
      return state
  }
}

export type CommandPhase = 'sending' | 'pending' | 'applied' | 'rejected' | 'error'

export interface CommandView {
  action: ControlAction
  phase: CommandPhase
  text: string
  step?: number
}

/** What the page says about `action`'s latest command, given the control records the run has sent. */
export function commandView(
  action: ControlAction,
  local: LocalCommand | undefined,
  records: ReadonlyMap<string, ControlRecord>,
): CommandView | null {
  if (!local) return null
  if (local.phase === 'sending') return { action, phase: 'sending', text: 'sending…' }
  if (local.phase === 'error') return { action, phase: 'error', text: local.message ?? 'failed' }
  const record = local.commandId !== undefined ? records.get(local.commandId) : undefined
  if (!record) return { action, phase: 'pending', text: 'pending: takes effect at the next step' }
  if (record.status === 'applied') {
    const scale = action === 'set_lr' && typeof record.lr_scale === 'number' ? `×${String(record.lr_scale)} ` : ''
    return { action, phase: 'applied', text: `${scale}applied at step ${formatInt(record.step)}`, step: record.step }
  }
  const why = record.detail ? `: ${record.detail}` : ''
  return { action, phase: 'rejected', text: `rejected at step ${formatInt(record.step)}${why}`, step: record.step }
}

export const NO_TOKEN_MESSAGE = 'no control token: open the address the sidecar printed (it ends in #token=…)'

/** Parse the set_lr multiplier field: a finite number > 0, else a sentence saying what is wrong. */
export function parseLrScale(text: string): { ok: true; value: number } | { ok: false; message: string } {
  const value = Number(text.trim())
  if (text.trim() === '' || !Number.isFinite(value)) return { ok: false, message: 'enter a number, e.g. 0.5' }
  if (value <= 0) return { ok: false, message: 'the multiplier must be above 0' }
  if (value > 1000) return { ok: false, message: 'at most 1000× the schedule' }
  return { ok: true, value }
}
