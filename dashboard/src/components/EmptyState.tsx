/** No runs yet: the command that starts one, pointed at this sidecar. */
export function EmptyState() {
  const origin = window.location.origin
  return (
    <div className="empty" data-testid="empty-state">
      <h2>No runs yet</h2>
      <p>Start a training run that reports here; its curves appear as soon as the first step is logged.</p>
      <pre className="command">
        <code>make demo</code>
      </pre>
      <p>or, for your own run (the token is the one in this page&apos;s address):</p>
      <pre className="command">
        <code>
          LLM_DASHBOARD_TOKEN=… deepspeed --num_gpus 2 launch/train.py \{'\n'}
          {'    '}--deepspeed ds_configs/cpu.json --model tiny \{'\n'}
          {'    '}--dashboard {origin}
        </code>
      </pre>
    </div>
  )
}
