// The editor page: a CodeMirror 6 view bound to the document's Y.Text, synced through
// the y-websocket provider, with live cursors, presence, status and own-edits undo.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Compartment, EditorState } from '@codemirror/state'
import {
  EditorView,
  drawSelection,
  dropCursor,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  placeholder
} from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import {
  YSyncConfig,
  yCollab,
  yRemoteSelections,
  yRemoteSelectionsTheme,
  ySyncFacet,
  yUndoManagerKeymap
} from 'y-codemirror.next'

import { AccessError, obtainAccess } from './auth.js'
import { TEXT_NAME, readConfig, websocketBase } from './config.js'
import { awarenessUser, bindIdentityInputs, loadIdentity } from './identity.js'
import { renderPresence, watchPeople } from './presence.js'
import { createStatusPill } from './status.js'

const config = readConfig()
const $ = (id) => document.getElementById(id)

const ydoc = new Y.Doc()
const ytext = ydoc.getText(TEXT_NAME)
// Connected only once we know how (a token first when authentication is on).
const provider = new WebsocketProvider(websocketBase(config.wsPath), config.docId, ydoc, {
  connect: false,
  params: {}
})
const awareness = provider.awareness
// Remote changes arrive with the provider as origin, which the undo manager does not
// track: undo and redo only ever touch this person's own edits.
const undoManager = new Y.UndoManager(ytext)

// ---- the editor view ---------------------------------------------------------------

const editable = new Compartment()
const remoteCursors = new Compartment()

const theme = EditorView.theme({
  '&': { height: '100%', fontSize: '15px', backgroundColor: 'var(--surface)' },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': {
    fontFamily: 'ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace',
    lineHeight: '1.65'
  },
  // room above the first line for the name flags of remote carets
  '.cm-content': { padding: '1.5rem 0 3rem' },
  '.cm-line': { padding: '0 1.25rem 0 .75rem' },
  '.cm-gutters': { backgroundColor: 'transparent', border: 'none', color: 'var(--faint)' },
  '.cm-activeLine, .cm-activeLineGutter': { backgroundColor: 'var(--active-line)' },
  // names are always shown above remote carets, not only on hover
  '.cm-ySelectionInfo': {
    opacity: 1,
    top: '-1.5em',
    left: '-1px',
    padding: '1px 6px',
    borderRadius: '4px 4px 4px 0',
    fontFamily: 'system-ui, -apple-system, "Segoe UI", sans-serif',
    fontSize: '11px',
    fontWeight: '600',
    lineHeight: '1.35'
  },
  '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0' }
})

const container = $('editor')
container.replaceChildren()
const view = new EditorView({
  parent: container,
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      highlightActiveLine(),
      EditorView.lineWrapping,
      placeholder('Start typing: everyone here sees it as you write.'),
      keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
      // Text sync and own-edits undo from yCollab; the remote carets are added below on
      // their own, in a compartment, so they can be redrawn when someone renames
      // themselves (the caret widget only compares colours).
      yCollab(ytext, null, { undoManager }),
      ySyncFacet.of(new YSyncConfig(ytext, awareness)), // the last value of the facet wins
      yRemoteSelectionsTheme,
      remoteCursors.of(yRemoteSelections),
      editable.of(EditorState.readOnly.of(false)),
      EditorView.contentAttributes.of({ 'aria-label': `Text of ${config.docId}` }),
      theme
    ]
  })
})

function redrawRemoteCursors () {
  view.dispatch({ effects: remoteCursors.reconfigure([]) })
  view.dispatch({ effects: remoteCursors.reconfigure(yRemoteSelections) })
  view.dispatch({}) // a new plugin draws on its first update, not when created
}

// ---- identity and presence -----------------------------------------------------------

const nameInput = $('my-name')
const identity = loadIdentity(config.userName || null)
bindIdentityInputs({
  nameInput,
  colorInput: $('my-color'),
  identity,
  editableName: !config.userName,
  onChange: (current) => {
    awareness.setLocalStateField('user', awarenessUser(current))
    nameInput.style.setProperty('--me', current.color)
  }
})

const people = { list: $('people'), count: $('people-count') }
renderPresence(people, awareness)
watchPeople(awareness, (kind) => {
  renderPresence(people, awareness)
  if (kind === 'renamed') setTimeout(redrawRemoteCursors, 0) // never inside a view update
})

// ---- undo / redo buttons ------------------------------------------------------------

const undoButton = $('undo')
const redoButton = $('redo')
let readOnly = false
const refreshHistoryButtons = () => {
  undoButton.disabled = readOnly || undoManager.undoStack.length === 0
  redoButton.disabled = readOnly || undoManager.redoStack.length === 0
}
for (const event of ['stack-item-added', 'stack-item-popped', 'stack-cleared']) {
  undoManager.on(event, refreshHistoryButtons)
}
undoButton.addEventListener('click', () => { undoManager.undo(); view.focus() })
redoButton.addEventListener('click', () => { undoManager.redo(); view.focus() })
refreshHistoryButtons()

function setReadOnly (value) {
  readOnly = value
  view.dispatch({ effects: editable.reconfigure(EditorState.readOnly.of(value)) })
  $('mode').hidden = !value
  refreshHistoryButtons()
}

// ---- notices ------------------------------------------------------------------------

const notice = $('notice')
function showNotice (message, link = null) {
  notice.replaceChildren(document.createTextNode(message))
  if (link) {
    const anchor = document.createElement('a')
    anchor.href = link.href
    anchor.textContent = link.text
    notice.append(' ', anchor)
  }
}

// ---- connection -----------------------------------------------------------------------

const status = createStatusPill($('status'))
status.follow(provider)
let blocked = false
let failedAuthorizations = 0
let refreshTimer = null

function block (label, message, link = null) {
  blocked = true
  provider.disconnect()
  status.block(label)
  showNotice(message, link)
}

/** Get a token (auth on), set it on the provider, and keep it fresh before it expires. */
async function authorize () {
  clearTimeout(refreshTimer)
  try {
    const access = await obtainAccess(config)
    provider.params = { ...provider.params, token: access.token }
    setReadOnly(access.perm !== 'write')
    if (access.perm !== 'write') showNotice('You can read this document and see who is here, but not edit it.')
    refreshTimer = setTimeout(authorize, Math.max(30, access.expiresIn * 0.8) * 1000)
    return true
  } catch (error) {
    if (error instanceof AccessError && error.status === 401) {
      block('Signed out', 'Your session has ended.', { href: config.loginUrl, text: 'Sign in again' })
    } else if (error instanceof AccessError && error.status === 403) {
      block('No access', 'Your account may not open this document.')
    } else {
      // the network or the server is down for now: try again shortly
      refreshTimer = setTimeout(authorize, 15000)
    }
    return false
  }
}

function connect () {
  if (!blocked && navigator.onLine) provider.connect()
}

// If an old connection of this page closes at the server only after the new one joined
// (a network that froze it, say), the server drops this page's presence for everyone:
// announce it once more a moment after each sync.
let reannounceTimer = null
provider.on('sync', (synced) => {
  if (!synced) return
  failedAuthorizations = 0
  clearTimeout(reannounceTimer)
  reannounceTimer = setTimeout(() => {
    const state = awareness.getLocalState()
    if (state && provider.synced) awareness.setLocalState({ ...state })
  }, 2000)
})

// On a disconnect the provider drops everyone else's presence but keeps their clocks,
// and after the reconnect it would ignore the same states (same clocks) from the
// server until each person next moves: forget the clocks along with the states.
provider.on('status', ({ status }) => {
  if (status !== 'disconnected') return
  for (const clientId of [...awareness.meta.keys()]) {
    if (clientId !== awareness.clientID && !awareness.states.has(clientId)) {
      awareness.meta.delete(clientId)
    }
  }
})

// The provider stops by itself after a close code 44xx; decide what comes next.
provider.on('closed', async ({ code, reason }) => {
  if ((code === 4401 || code === 4403) && config.authRequired && failedAuthorizations < 3) {
    failedAuthorizations += 1
    if (await authorize()) connect()
  } else if (code === 4429) {
    setTimeout(connect, 5000)
  } else if (code === 4401 || code === 4403) {
    block('No access', 'The server refused this document.')
  } else {
    block('Disconnected', `The server closed the connection: ${reason || code}.`)
  }
})

// Chromium keeps WebSockets open when it goes offline, and a dead network can take
// minutes to notice: leave and rejoin explicitly. Edits made meanwhile stay in the
// local document and are merged by the sync on reconnect. Rejoin once the old socket
// has closed (or after 2 s), so the server handles that departure before the arrival.
let staleSocket = null
function closed (socket, timeoutMs) {
  return new Promise((resolve) => {
    if (!socket || socket.readyState === WebSocket.CLOSED) return resolve()
    const timer = setTimeout(resolve, timeoutMs)
    socket.addEventListener('close', () => { clearTimeout(timer); resolve() }, { once: true })
  })
}
window.addEventListener('offline', () => {
  staleSocket = provider.ws
  provider.disconnect()
})
window.addEventListener('online', async () => {
  const socket = staleSocket
  staleSocket = null
  await closed(socket, 2000)
  connect()
})
// Leaving the page tells the others at once (the server would notice the close anyway).
window.addEventListener('pagehide', () => provider.disconnect())
window.addEventListener('pageshow', (event) => { if (event.persisted) connect() })

// For debugging in the browser console.
window.collab = { ydoc, ytext, provider, view, undoManager }

if (!config.authRequired || await authorize()) connect()
