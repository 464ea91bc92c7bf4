// Trusted keys, signatures and key rotations (release/keys.go, envelope.go,
// rotation.go; device/trust.go).
import * as noble from '@noble/ed25519'
import { base64Decode, equalBytes, sha256, toHex, utf8 } from './bytes.js'
import { CapstanError } from './errors.js'
import { rawField } from './rawjson.js'

export type Role = 'release' | 'origin' | ''

/** A trusted ed25519 public key (32 raw bytes) and its role ("" means any). */
export interface PublicKey {
  key: Uint8Array
  role: Role
}

/** A signed document: the exact signed bytes and detached signatures over them. */
export interface Envelope {
  signed: Uint8Array
  signatures: { keyid: string; sig: Uint8Array }[]
}

export const MAX_SIGNATURES = 8
const PKIX_ED25519 = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]

/** parsePublicKeys reads every PEM "PUBLIC KEY" block (ed25519, PKIX) with its Role header. */
export function parsePublicKeys(pem: string): PublicKey[] {
  const out: PublicKey[] = []
  const re = /-----BEGIN PUBLIC KEY-----\r?\n([\s\S]*?)-----END PUBLIC KEY-----/g
  for (let m; (m = re.exec(pem)); ) {
    let role: Role = ''
    const lines = m[1].split(/\r?\n/)
    let b64 = ''
    for (const line of lines) {
      const h = /^([A-Za-z-]+):\s*(.*)$/.exec(line)
      if (h) {
        if (h[1] === 'Role') role = h[2].trim() as Role
        continue
      }
      b64 += line.trim()
    }
    const der = base64Decode(b64)
    if (der.length !== 44 || !PKIX_ED25519.every((b, i) => der[i] === b)) throw new CapstanError('bad-manifest', 'public key is not ed25519')
    if (role !== '' && role !== 'release' && role !== 'origin') throw new CapstanError('bad-manifest', `public key role ${role}`)
    out.push({ key: der.slice(12), role })
    if (out.length > 64) throw new CapstanError('bad-manifest', 'too many public keys')
  }
  if (!out.length) throw new CapstanError('bad-manifest', 'no PEM "PUBLIC KEY" block found')
  return out
}

/** keyId names a key: hex of the first 8 bytes of its SHA-256. */
export async function keyId(key: Uint8Array): Promise<string> {
  return toHex((await sha256(key)).subarray(0, 8))
}

export function keysFor(keys: PublicKey[], role: Role): Uint8Array[] {
  return keys.filter((k) => k.role === '' || k.role === role).map((k) => k.key)
}

/** parseEnvelope takes an envelope from the text of its JSON, keeping the signed bytes as received. */
export function parseEnvelope(text: string): Envelope {
  const raw = rawField(text, 'signed')
  if (raw === null || raw === 'null') throw new CapstanError('verify', 'envelope has no signed document')
  const sigs = (JSON.parse(text).signatures ?? []) as { keyid: string; sig: string }[]
  if (!Array.isArray(sigs) || sigs.length > MAX_SIGNATURES) throw new CapstanError('verify', 'envelope: bad signature list')
  return {
    signed: utf8.encode(raw),
    signatures: sigs.map((s) => ({ keyid: String(s.keyid), sig: typeof s.sig === 'string' ? base64Decode(s.sig) : new Uint8Array(0) })),
  }
}

let webcrypto: boolean | undefined

/**
 * ed25519Verify checks a signature with WebCrypto where the engine has
 * Ed25519 (Chromium 137+, Safari 17+, Node 20), else with @noble/ed25519
 * (strict RFC 8032, as Go's crypto/ed25519).
 */
export async function ed25519Verify(key: Uint8Array, sig: Uint8Array, msg: Uint8Array): Promise<boolean> {
  if (sig.length !== 64 || key.length !== 32) return false
  if (webcrypto !== false) {
    try {
      const k = await crypto.subtle.importKey('raw', key as BufferSource, { name: 'Ed25519' }, false, ['verify'])
      webcrypto = true
      return await crypto.subtle.verify({ name: 'Ed25519' }, k, sig as BufferSource, msg as BufferSource)
    } catch (e) {
      if (webcrypto) return false // the engine has Ed25519: this key or signature is bad
      webcrypto = false
    }
  }
  try {
    return await noble.verifyAsync(sig, msg, key, { zip215: false })
  } catch {
    return false
  }
}

/** verifiedBy reports which path verifies signatures here: "webcrypto" or "noble" (after the first verify). */
export function verifier(): string {
  return webcrypto === false ? 'noble' : 'webcrypto'
}

/**
 * verifyEnvelope mirrors Envelope.Verify: at least one signature by a
 * trusted key verifies, and a signature by a trusted key that does not
 * verify is an error. code "verify" with unsigned=true means no trusted
 * key signed it (the device may need a key rotation).
 */
export async function verifyEnvelope(env: Envelope, trusted: Uint8Array[]): Promise<void> {
  if (env.signatures.length > MAX_SIGNATURES) throw new CapstanError('verify', `${env.signatures.length} signatures`)
  let ok = false
  for (const s of env.signatures) {
    for (const k of trusted) {
      if ((await keyId(k)) !== s.keyid) continue
      if (!(await ed25519Verify(k, s.sig, env.signed))) throw new CapstanError('verify', `signature by key ${s.keyid} does not verify`)
      ok = true
    }
  }
  if (!ok) throw new Unsigned()
}

/** Unsigned: no signature by a trusted key (release.ErrUnsigned). */
export class Unsigned extends CapstanError {
  constructor() {
    super('verify', 'document is not signed by a trusted key')
  }
}

interface Rotation {
  type: string
  role: 'release' | 'origin'
  old: string
  new: Uint8Array
}

export const MAX_ROTATIONS = 32

function decodeRotation(env: Envelope): Rotation | null {
  if (env.signed.length > 4096) return null
  try {
    const r = JSON.parse(new TextDecoder().decode(env.signed))
    const key = base64Decode(r.new)
    if (r.type !== 'capstan.rotation/v1' || (r.role !== 'release' && r.role !== 'origin') || typeof r.old !== 'string' || r.old.length !== 16 || key.length !== 32) return null
    return { type: r.type, role: r.role, old: r.old, new: key }
  } catch {
    return null
  }
}

async function indexOfKey(trusted: PublicKey[], id: string, role: Role): Promise<number> {
  for (let i = 0; i < trusted.length; i++) {
    if ((trusted[i].role === '' || trusted[i].role === role) && (await keyId(trusted[i].key)) === id) return i
  }
  return -1
}

/** applyRotation mirrors release.ApplyRotation; it returns the new set, or null when the statement does not apply. */
async function applyRotation(trusted: PublicKey[], env: Envelope): Promise<{ keys: PublicKey[]; role: string } | null> {
  const r = decodeRotation(env)
  if (!r) return null
  if ((await keyId(r.new)) === r.old) return null
  if (r.role === 'origin') {
    let byRelease = false
    try {
      await verifyEnvelope(env, keysFor(trusted, 'release'))
      byRelease = true
    } catch {}
    if (byRelease) {
      const out: PublicKey[] = []
      let changed = false
      for (const k of trusted) {
        if (k.role === 'origin' && equalBytes(k.key, r.new)) continue
        if (k.role === 'origin') {
          changed = true
          continue
        }
        out.push(k.role === '' ? { key: k.key, role: 'release' } : k)
      }
      out.push({ key: r.new, role: 'origin' })
      if (!changed && (await indexOfKey(trusted, await keyId(r.new), 'origin')) >= 0) return null
      return { keys: out, role: 'origin' }
    }
  }
  const oldIdx = await indexOfKey(trusted, r.old, r.role)
  if (oldIdx < 0) return null
  await verifyEnvelope(env, [trusted[oldIdx].key])
  const out: PublicKey[] = []
  trusted.forEach((k, i) => {
    if (i !== oldIdx) out.push(k)
    else if (k.role === '') out.push({ key: k.key, role: r.role === 'release' ? 'origin' : 'release' })
  })
  if ((await indexOfKey(out, await keyId(r.new), r.role)) < 0) out.push({ key: r.new, role: r.role })
  return { keys: out, role: r.role }
}

/**
 * applyRotations applies statements in any order until none applies
 * (release.ApplyRotations). It returns the new set and the roles rotated.
 */
export async function applyRotations(trusted: PublicKey[], envs: Envelope[]): Promise<{ keys: PublicKey[]; roles: string[] }> {
  envs = envs.slice(-MAX_ROTATIONS)
  const done = new Array(envs.length).fill(false)
  const roles: string[] = []
  for (let progress = true; progress; ) {
    progress = false
    for (let i = 0; i < envs.length; i++) {
      if (done[i]) continue
      let res
      try {
        res = await applyRotation(trusted, envs[i])
      } catch {
        return { keys: trusted, roles } // a statement that names a trusted key but does not verify: stop
      }
      if (res) {
        done[i] = true
        trusted = res.keys
        roles.push(res.role)
        progress = true
      }
    }
  }
  return { keys: trusted, roles }
}
