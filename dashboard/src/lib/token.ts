// The control token arrives in the URL fragment (`#token=...`, never sent to a server). Keep it for
// this tab in sessionStorage and take it out of the address bar, so a screenshot or a shared link does
// not carry it.
export const TOKEN_KEY = 'llm-dashboard-token'

export function takeTokenFromUrl(
  location: Pick<Location, 'hash' | 'pathname' | 'search'>,
  history: Pick<History, 'replaceState' | 'state'>,
  storage: Pick<Storage, 'getItem' | 'setItem'>,
): string | null {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ''))
  const fromUrl = fragment.get('token')
  if (fromUrl) {
    storage.setItem(TOKEN_KEY, fromUrl)
    fragment.delete('token')
    const rest = fragment.toString()
    history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`)
    return fromUrl
  }
  return storage.getItem(TOKEN_KEY)
}
