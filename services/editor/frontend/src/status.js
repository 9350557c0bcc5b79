// The connection pill: connected / connecting / reconnecting / offline, from the
// provider's `status` and `sync` events and the browser's online state.

const LABELS = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  blocked: 'Disconnected'
}

const HINTS = {
  connecting: 'Connecting to the server',
  connected: 'Your changes reach everyone as you type',
  reconnecting: 'The connection dropped: your edits are kept and sent when it is back',
  offline: 'You are offline: keep editing, your changes are merged when you are back online',
  blocked: ''
}

export function createStatusPill (element) {
  const text = element.querySelector('.status-text')
  let socket = 'connecting'
  let synced = false
  let everConnected = false
  let blocked = null

  const state = () => {
    if (blocked) return 'blocked'
    if (!navigator.onLine) return 'offline'
    if (socket === 'connected' && synced) return 'connected'
    return everConnected ? 'reconnecting' : 'connecting'
  }

  const render = () => {
    const current = state()
    element.dataset.state = current
    text.textContent = current === 'blocked' ? blocked : LABELS[current]
    element.title = HINTS[current] || blocked || ''
  }

  window.addEventListener('online', render)
  window.addEventListener('offline', render)
  render()

  return {
    /** Follow a y-websocket provider's `status` and `sync` events. */
    follow (provider) {
      provider.on('status', ({ status }) => {
        socket = status
        if (status !== 'connected') synced = false
        render()
      })
      provider.on('sync', (isSynced) => {
        synced = isSynced
        if (isSynced) everConnected = true
        render()
      })
    },
    /** Show a terminal state (no access, signed out) until `unblock`. */
    block (label) {
      blocked = label
      render()
    },
    unblock () {
      blocked = null
      render()
    },
    get state () {
      return state()
    }
  }
}
