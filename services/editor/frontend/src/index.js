// The document list: check the open form as you type, show edit times relative to now
// and how many people are in each document (asked of the document's editor).

import { AccessError, requestToken } from './auth.js'
import { readConfig } from './config.js'

const config = readConfig()

// ---- open or create ---------------------------------------------------------------

const form = document.getElementById('open-form')
const input = document.getElementById('doc-name')
const error = document.getElementById('doc-error')
const validId = new RegExp(`^(?:${input.pattern})$`, 'u')

function complain (message) {
  error.textContent = message
  input.setAttribute('aria-invalid', 'true')
  input.focus()
}

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = input.value.trim()
  if (!name) return complain('Enter a document name.')
  if (!validId.test(name)) {
    return complain(`“${name}” is not a valid document name. ${config.docIdRule || ''}`.trim())
  }
  window.location.assign('/d/' + encodeURIComponent(name))
})
input.addEventListener('input', () => {
  if (input.getAttribute('aria-invalid') === 'true' && validId.test(input.value.trim())) {
    error.textContent = ''
    input.removeAttribute('aria-invalid')
  }
})

// ---- relative times -----------------------------------------------------------------

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
const UNITS = [['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]]

function ago (date) {
  const seconds = (date.getTime() - Date.now()) / 1000
  if (Math.abs(seconds) < 45) return 'just now'
  const [unit, size] = UNITS.find(([, size]) => Math.abs(seconds) >= size)
  return relative.format(Math.round(seconds / size), unit)
}

function refreshTimes () {
  for (const element of document.querySelectorAll('time[datetime]')) {
    const date = new Date(element.getAttribute('datetime'))
    if (!Number.isNaN(date.getTime())) element.textContent = ago(date)
  }
}

// ---- people connected -------------------------------------------------------------

async function peopleIn (docId) {
  const headers = {}
  if (config.authRequired) {
    const { token } = await requestToken({ ...config, docId }, 'read')
    headers.Authorization = `Bearer ${token}`
  }
  const response = await fetch(`/api/docs/${encodeURIComponent(docId)}`, { headers, credentials: 'same-origin' })
  if (!response.ok) throw new AccessError(response.status, `HTTP ${response.status}`)
  const body = await response.json()
  return Number(body.people) || 0
}

function showPeople (cell, count) {
  cell.replaceChildren()
  cell.dataset.count = String(count)
  if (count > 0) {
    const dot = document.createElement('span')
    dot.className = 'live-dot'
    dot.setAttribute('aria-hidden', 'true')
    cell.append(dot, `${count} ${count === 1 ? 'person' : 'people'}`)
  } else {
    cell.append('nobody')
  }
}

async function refreshPeople () {
  const rows = [...document.querySelectorAll('tr[data-doc]')]
  const queue = rows.slice()
  const worker = async () => {
    for (let row = queue.shift(); row; row = queue.shift()) {
      const cell = row.querySelector('[data-people]')
      try {
        showPeople(cell, await peopleIn(row.dataset.doc))
      } catch {
        cell.textContent = '–'
      }
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()])
}

refreshTimes()
refreshPeople()
setInterval(() => {
  if (document.visibilityState === 'visible') {
    refreshTimes()
    refreshPeople()
  }
}, 15000)
