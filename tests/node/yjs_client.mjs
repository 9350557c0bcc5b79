// A stock Yjs client: the y-websocket WebsocketProvider on Node, unmodified.
//
//   node tests/node/yjs_client.mjs <serverUrl> <docId> <clientName> <numEdits>
//
// Connects to <serverUrl>/<docId>, waits for the first sync, then makes <numEdits> edits a
// few milliseconds apart: each appends the token "<clientName>-<i>;" to the Y.Text "text"
// and sets "<clientName>-<i>" = i in the Y.Map "map". It then reads JSON lines from stdin;
// {"expect_tokens": N, "expect_keys": M} makes it wait until the text holds N tokens and
// the map M keys, print {"text": ..., "map": {...}} as one JSON line and exit 0. Any
// failure (no sync, expectation not met in time, server closing for good) exits 1 with a
// message on stderr.

import * as readline from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

const SYNC_TIMEOUT_MS = 15_000
const EXPECT_TIMEOUT_MS = 20_000
const EDIT_SPACING_MS = 3
const POLL_MS = 20

const [serverUrl, docId, clientName, numEditsArg] = process.argv.slice(2)
const numEdits = Number.parseInt(numEditsArg ?? '', 10)
if (!serverUrl || !docId || !clientName || !Number.isInteger(numEdits) || numEdits < 0) {
  process.stderr.write('usage: node yjs_client.mjs <serverUrl> <docId> <clientName> <numEdits>\n')
  process.exit(2)
}

const log = (message) => process.stderr.write(`${clientName}: ${message}\n`)

const fail = (message) => {
  log(message)
  process.exit(1)
}

process.on('unhandledRejection', (error) => fail(`unhandled rejection: ${error?.stack ?? error}`))
process.on('uncaughtException', (error) => fail(`uncaught exception: ${error?.stack ?? error}`))

const doc = new Y.Doc()
const text = doc.getText('text')
const map = doc.getMap('map')
// Only the server connects the clients: no BroadcastChannel shortcut between providers.
const provider = new WebsocketProvider(serverUrl, docId, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true
})
provider.awareness.setLocalState({ user: { name: clientName } })

let leaving = false
provider.on('connection-close', (event) => {
  if (!leaving) log(`connection closed (code ${event?.code ?? '-'} ${event?.reason ?? ''}); reconnecting`)
})
provider.on('connection-error', (event) => log(`connection error: ${event?.message ?? event}`))
provider.on('closed', ({ code, reason }) => fail(`server closed the connection for good: ${code} ${reason}`))

const countTokens = () => (text.toString().match(/;/g) ?? []).length

// JSON has no BigInt; Yjs decodes 64-bit integers from other implementations as BigInt.
const toJSON = (value) => JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? Number(v) : v))

// Poll until `predicate` holds; false once `timeoutMs` passed without it.
const waitFor = async (predicate, timeoutMs) => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) return false
    await sleep(POLL_MS)
  }
  return true
}

const answer = async (request) => {
  const tokens = request.expect_tokens
  const keys = request.expect_keys
  const met = await waitFor(() => countTokens() === tokens && map.size === keys, EXPECT_TIMEOUT_MS)
  if (!met) {
    fail(
      `timed out after ${EXPECT_TIMEOUT_MS} ms waiting for ${tokens} tokens and ${keys} keys ` +
        `(have ${countTokens()} tokens and ${map.size} keys)`
    )
  }
  const line = toJSON({ text: text.toString(), map: map.toJSON() }) + '\n'
  const socket = provider.ws
  leaving = true
  provider.destroy()
  // Leave cleanly: give the closing handshake a moment before exiting.
  await waitFor(() => socket === null || socket.readyState === WebSocket.CLOSED, 2_000)
  process.stdout.write(line, () => process.exit(0))
}

if (!(await waitFor(() => provider.synced, SYNC_TIMEOUT_MS))) {
  fail(`no sync with ${provider.url} after ${SYNC_TIMEOUT_MS} ms`)
}

for (let i = 0; i < numEdits; i++) {
  doc.transact(() => {
    text.insert(text.length, `${clientName}-${i};`)
    map.set(`${clientName}-${i}`, i)
  })
  await sleep(EDIT_SPACING_MS)
}

let answering = false
const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim() || answering) return
  let request
  try {
    request = JSON.parse(line)
  } catch (error) {
    fail(`stdin line is not JSON: ${line}`)
  }
  if (!Number.isInteger(request?.expect_tokens) || !Number.isInteger(request?.expect_keys)) {
    fail(`expected {"expect_tokens": N, "expect_keys": M}, got ${line}`)
  }
  answering = true
  answer(request)
})
lines.on('close', () => {
  if (!answering) fail('stdin closed before an expectation arrived')
})
