// Who you are to the others: a display name and a colour, shown on your cursor and in
// the presence list. Visitors get a generated one, kept in localStorage and editable.

const STORAGE_KEY = 'collab.identity'
const MAX_NAME_LENGTH = 40

const ADJECTIVES = [
  'Curious', 'Brave', 'Calm', 'Clever', 'Gentle', 'Happy', 'Jolly', 'Kind', 'Lively', 'Lucky',
  'Merry', 'Nimble', 'Patient', 'Quick', 'Quiet', 'Sunny', 'Swift', 'Witty', 'Bold', 'Bright'
]
const ANIMALS = [
  'Otter', 'Badger', 'Falcon', 'Fox', 'Heron', 'Koala', 'Lynx', 'Marten', 'Narwhal', 'Owl',
  'Panda', 'Puffin', 'Quokka', 'Robin', 'Seal', 'Tapir', 'Walrus', 'Wombat', 'Yak', 'Zebra'
]
/** Colours readable as a caret and, at 20% opacity, as a selection on white. */
export const PALETTE = [
  '#e5484d', '#f76b15', '#d6a100', '#30a46c', '#12a594', '#0090ff', '#3e63dd', '#8e4ec6',
  '#d6409f', '#7c5e3c'
]

const pick = (items) => items[Math.floor(Math.random() * items.length)]
const HEX_COLOR = /^#[0-9a-f]{6}$/i

export function randomIdentity () {
  return { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(PALETTE) }
}

export function cleanName (name) {
  return String(name || '').replace(/\s+/g, ' ').trim().slice(0, MAX_NAME_LENGTH)
}

function readStored () {
  try {
    const value = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || 'null')
    return value && typeof value === 'object' ? value : {}
  } catch {
    return {} // storage disabled or a corrupt entry: start afresh
  }
}

function store (identity) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(identity))
  } catch {
    // private mode or storage full: the identity lasts for this page only
  }
}

/**
 * The identity of this browser: the stored one, completed with generated values.
 * `fixedName` (a signed-in user's name) replaces the display name.
 */
export function loadIdentity (fixedName = null) {
  const stored = readStored()
  const generated = randomIdentity()
  const identity = {
    name: cleanName(stored.name) || generated.name,
    color: HEX_COLOR.test(stored.color || '') ? stored.color : generated.color
  }
  store(identity)
  return fixedName ? { ...identity, name: fixedName } : identity
}

/** The awareness `user` field y-codemirror.next reads for carets and selections. */
export function awarenessUser (identity) {
  return { name: identity.name, color: identity.color, colorLight: `${identity.color}33` }
}

/**
 * Wire the header's name and colour inputs: every change is applied at once through
 * `onChange(identity)` and remembered for the next visit.
 */
export function bindIdentityInputs ({ nameInput, colorInput, identity, editableName, onChange }) {
  let current = { ...identity }
  const apply = (changes, { persist = true } = {}) => {
    current = { ...current, ...changes }
    if (persist) {
      const stored = readStored()
      store({ name: editableName ? current.name : stored.name || current.name, color: current.color })
    }
    onChange(current)
  }
  colorInput.value = current.color
  colorInput.addEventListener('input', () => apply({ color: colorInput.value }))
  if (editableName) {
    nameInput.value = current.name
    nameInput.addEventListener('input', () => {
      const name = cleanName(nameInput.value)
      if (name) apply({ name })
    })
    const settle = () => {
      // an emptied field falls back to the last name in use
      nameInput.value = current.name
    }
    nameInput.addEventListener('change', settle)
    nameInput.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === 'Escape') {
        settle()
        nameInput.blur()
      }
    })
  }
  onChange(current)
  return () => current
}
