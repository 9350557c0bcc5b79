// What the server tells the page (rendered with json_script) and the names both ends share.

/** The Y.Text that holds the editor's content: every client of a document must agree on it. */
export const TEXT_NAME = 'codemirror'

/** The page's settings, rendered by the server into <script id="collab-config">. */
export function readConfig () {
  const element = document.getElementById('collab-config')
  return element ? JSON.parse(element.textContent || '{}') : {}
}

/** Base URL of the y-websocket endpoint on the same host the page came from. */
export function websocketBase (path = '/ws/docs') {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${window.location.host}${path}`
}
