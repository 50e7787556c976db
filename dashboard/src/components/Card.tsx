import type { ReactNode } from 'react'

export interface CardProps {
  id: string
  title: string
  /** controls in the card's header (toggles, selects) */
  tools?: ReactNode
  /** the latest values, large */
  numbers?: ReactNode
  children: ReactNode
  footer?: ReactNode
}

export function Card({ id, title, tools, numbers, children, footer }: CardProps) {
  const headingId = `card-${id}-title`
  return (
    <section className="card" aria-labelledby={headingId} data-testid={`card-${id}`}>
      <header className="card-head">
        <h2 id={headingId}>{title}</h2>
        {tools ? <div className="card-tools">{tools}</div> : null}
      </header>
      {numbers ? <div className="big-numbers">{numbers}</div> : null}
      <div className="card-body">{children}</div>
      {footer ? <footer className="card-foot">{footer}</footer> : null}
    </section>
  )
}
