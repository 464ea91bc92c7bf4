// What the channel record offers this device (release/channel.go Target and
// InRollout, release/policy.go CheckOffer): devices run the same rules as
// edges, because they trust no edge.
import { sha256, toHex, utf8 } from './bytes.js'

export const ZERO_ID = '0'.repeat(64)

export interface Ref {
  version: string
  id: string
  sealed?: string
}

export interface Channel {
  type: string
  app: string
  channel: string
  seq: number
  release: Ref
  rollout_bps: number
  stable?: Ref | null
  paused?: boolean
  rollback?: boolean
  block_major?: boolean
  default?: boolean
  device_select?: boolean
  issued: string
  expires: string
}

export interface ReleaseDoc {
  app: string
  version: string
  min_native?: string
}

interface Version {
  major: bigint
  minor: bigint
  patch: bigint
  pre: string[]
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/

/** parseVersion is strict semver (release.ParseVersion): no "v", at most 64 characters. */
export function parseVersion(v: string | undefined): Version | null {
  if (!v || v.length > 64) return null
  const m = SEMVER.exec(v)
  if (!m) return null
  return { major: BigInt(m[1]), minor: BigInt(m[2]), patch: BigInt(m[3]), pre: m[4] ? m[4].split('.') : [] }
}

/** compareVersions orders versions by semver precedence. */
export function compareVersions(a: Version, b: Version): number {
  for (const k of ['major', 'minor', 'patch'] as const) if (a[k] !== b[k]) return a[k] < b[k] ? -1 : 1
  if (!a.pre.length || !b.pre.length) return b.pre.length - a.pre.length
  for (let i = 0; i < Math.min(a.pre.length, b.pre.length); i++) {
    const [x, y] = [a.pre[i], b.pre[i]]
    if (x === y) continue
    const [nx, ny] = [/^\d+$/.test(x), /^\d+$/.test(y)]
    if (nx && ny) return BigInt(x) < BigInt(y) ? -1 : 1
    if (nx !== ny) return nx ? -1 : 1
    return x < y ? -1 : 1
  }
  return a.pre.length - b.pre.length
}

/** rolloutBucket is the device's bucket (0–9999) for a release: SHA-256(id bytes ‖ device id). */
export async function rolloutBucket(deviceId: string, releaseId: string): Promise<number> {
  const id = new Uint8Array(32)
  for (let i = 0; i < 32; i++) id[i] = parseInt(releaseId.substr(2 * i, 2), 16)
  const dev = utf8.encode(deviceId)
  const buf = new Uint8Array(32 + dev.length)
  buf.set(id)
  buf.set(dev, 32)
  const sum = await sha256(buf)
  return Number(BigInt('0x' + toHex(sum.subarray(0, 8))) % 10000n)
}

export async function inRollout(deviceId: string, releaseId: string, bps: number): Promise<boolean> {
  if (bps >= 10000) return true
  if (bps <= 0) return false
  return (await rolloutBucket(deviceId, releaseId)) < bps
}

/** target returns what the record offers a device running current, or null for nothing. */
export async function target(c: Channel, deviceId: string, current: string): Promise<Ref | null> {
  if (current === c.release.id && c.release.id !== ZERO_ID) return c.release
  if (!c.paused && (await inRollout(deviceId, c.release.id, c.rollout_bps))) return c.release
  return c.stable ?? null
}

export interface Refusal {
  code: string
  reason: string
}

/** checkOffer applies the channel's version rules to an offer (Channel.CheckOffer). */
export function checkOffer(c: Channel, o: { release: ReleaseDoc | null; target: Ref; currentVersion: string; native: string; failed: string[] }): Refusal | null {
  const t = o.target
  if (t.id !== ZERO_ID && o.failed.includes(t.id)) {
    return { code: 'failed_on_device', reason: `release ${t.version} failed on this device before; it is not offered again` }
  }
  if (t.id === ZERO_ID) {
    return c.rollback ? null : { code: 'disable_downgrade', reason: 'the built-in bundle is offered only by a rollback' }
  }
  const m = o.release
  if (m && m.min_native) {
    const min = parseVersion(m.min_native)
    if (min) {
      const nv = parseVersion(o.native)
      if (!nv) return { code: 'disable_auto_update_under_native', reason: `release ${m.version} needs native version ${m.min_native} or later; the device did not say its native version` }
      if (compareVersions(nv, min) < 0) return { code: 'disable_auto_update_under_native', reason: `release ${m.version} needs native version ${m.min_native} or later, the device runs ${o.native}` }
    }
  }
  if (!(c.block_major || (o.currentVersion !== '' && !c.rollback))) return null
  const tv = parseVersion(t.version)
  if (!tv) return { code: 'disable_downgrade', reason: `release version ${JSON.stringify(t.version)} is not semver` }
  if (c.block_major) {
    const nv = parseVersion(o.native)
    if (!nv) return { code: 'disable_auto_update_to_major', reason: `channel ${c.channel} blocks major updates and the device did not say its native version` }
    if (tv.major > nv.major) return { code: 'disable_auto_update_to_major', reason: `release ${t.version} is a new major version for native app ${o.native}: ship a store update first` }
  }
  if (o.currentVersion !== '' && !c.rollback) {
    const cv = parseVersion(o.currentVersion)
    if (cv && compareVersions(tv, cv) < 0) return { code: 'disable_downgrade', reason: `release ${t.version} is older than ${o.currentVersion}, which the device runs; only a rollback moves devices back` }
  }
  return null
}
