// The "Here now" list: everyone whose awareness state carries a `user`, you first.

export function renderPresence ({ list, count }, awareness) {
  const own = awareness.clientID
  const people = []
  awareness.getStates().forEach((state, clientId) => {
    if (state && state.user && typeof state.user.name === 'string') {
      people.push({ clientId, name: state.user.name, color: state.user.color, self: clientId === own })
    }
  })
  people.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name) || a.clientId - b.clientId)
  list.replaceChildren(...people.map((person) => {
    const item = document.createElement('li')
    item.className = 'person'
    item.dataset.clientId = String(person.clientId)
    if (person.self) item.dataset.self = 'true'
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.setAttribute('aria-hidden', 'true')
    dot.style.backgroundColor = person.color || '#6b7280' // set through CSSOM: bad values are dropped
    const name = document.createElement('span')
    name.className = 'person-name'
    name.textContent = person.name
    item.append(dot, name)
    if (person.self) {
      const you = document.createElement('span')
      you.className = 'you'
      you.textContent = '(you)'
      item.append(you)
    }
    return item
  }))
  count.textContent = String(people.length)
  count.setAttribute('aria-label', `${people.length} ${people.length === 1 ? 'person' : 'people'}`)
}

/**
 * Call `onChange(kind)` when the people or their names and colours change, ignoring the
 * cursor moves that make up most awareness traffic. `kind` is 'renamed' when someone
 * else's name or colour changed, 'joined-or-left' otherwise.
 */
export function watchPeople (awareness, onChange) {
  const known = new Map()
  const signature = (state) => (state && state.user ? `${state.user.name}\u0000${state.user.color}` : '')
  awareness.on('change', ({ added, updated, removed }) => {
    const states = awareness.getStates()
    let membership = added.length > 0 || removed.length > 0
    let renamed = false
    for (const id of added.concat(updated)) {
      const now = signature(states.get(id))
      const before = known.get(id)
      if (before !== now) {
        if (before === undefined) membership = true
        else if (id !== awareness.clientID) renamed = true
        else membership = true
      }
      known.set(id, now)
    }
    for (const id of removed) known.delete(id)
    if (renamed) onChange('renamed')
    else if (membership) onChange('joined-or-left')
  })
}
