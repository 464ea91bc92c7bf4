// Signatures cover the signed bytes exactly as received (release.Envelope:
// a json.RawMessage), so the client must not re-encode what it parsed. rawField
// finds a member of a JSON object in the text and returns its value's text.
import { CapstanError } from './errors.js'

const bad = (m: string) => new CapstanError('verify', `malformed answer: ${m}`)

/** skipValue returns the index just after the JSON value starting at i (after whitespace). */
function skipValue(s: string, i: number): number {
  i = skipWS(s, i)
  const c = s[i]
  if (c === '"') return skipString(s, i)
  if (c === '{' || c === '[') {
    const close = c === '{' ? '}' : ']'
    i = skipWS(s, i + 1)
    if (s[i] === close) return i + 1
    for (;;) {
      if (c === '{') {
        i = skipWS(s, i)
        if (s[i] !== '"') throw bad('object key')
        i = skipWS(s, skipString(s, i))
        if (s[i] !== ':') throw bad('missing colon')
        i++
      }
      i = skipWS(s, skipValue(s, i))
      if (s[i] === ',') {
        i++
        continue
      }
      if (s[i] === close) return i + 1
      throw bad('unterminated ' + (c === '{' ? 'object' : 'array'))
    }
  }
  const m = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(s.slice(i, i + 400))
  if (!m) throw bad('value')
  return i + m[0].length
}

function skipWS(s: string, i: number): number {
  while (i < s.length && (s[i] === ' ' || s[i] === '\n' || s[i] === '\r' || s[i] === '\t')) i++
  return i
}

function skipString(s: string, i: number): number {
  for (i++; i < s.length; i++) {
    if (s[i] === '\\') i++
    else if (s[i] === '"') return i + 1
  }
  throw bad('unterminated string')
}

/** rawField returns the text of member key of the object in s, or null when absent. */
export function rawField(s: string, key: string): string | null {
  let i = skipWS(s, 0)
  if (s[i] !== '{') throw bad('not an object')
  i = skipWS(s, i + 1)
  if (s[i] === '}') return null
  for (;;) {
    i = skipWS(s, i)
    const ks = i
    i = skipString(s, i)
    const k = JSON.parse(s.slice(ks, i)) as string
    i = skipWS(s, i)
    if (s[i] !== ':') throw bad('missing colon')
    const vs = skipWS(s, i + 1)
    const ve = skipValue(s, vs)
    if (k === key) return s.slice(vs, ve)
    i = skipWS(s, ve)
    if (s[i] === ',') {
      i++
      continue
    }
    if (s[i] === '}') return null
    throw bad('unterminated object')
  }
}

/** rawElements returns the texts of the elements of the JSON array in s. */
export function rawElements(s: string): string[] {
  let i = skipWS(s, 0)
  if (s[i] !== '[') throw bad('not an array')
  const out: string[] = []
  i = skipWS(s, i + 1)
  if (s[i] === ']') return out
  for (;;) {
    const vs = skipWS(s, i)
    const ve = skipValue(s, vs)
    out.push(s.slice(vs, ve))
    i = skipWS(s, ve)
    if (s[i] === ',') {
      i++
      continue
    }
    if (s[i] === ']') return out
    throw bad('unterminated array')
  }
}
