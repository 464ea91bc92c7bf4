// The update client: check, verify, download a patch, apply it into a new
// release folder, switch the WebView to it, confirm or revert. The same rules
// as docs/protocol.md and the Go reference device (device/).
import { applyPatch, BaseFiles, TargetFolder } from './apply.js'
import { base64Decode, base64Encode, fromHex, sha256, toHex, utf8, utf8d } from './bytes.js'
import { BrotliFactory, streamBrotli } from './codecs.js'
import { CapstanError, wrap } from './errors.js'
import { decodeFileList, encodeFileList, FileEntry, FileSet, fileSetOf, maxListBytes, sameFileSet, sortFiles, validateFiles, validatePath } from './filelist.js'
import { applyRotations, Envelope, keysFor, parseEnvelope, parsePublicKeys, PublicKey, Unsigned, verifyEnvelope } from './keys.js'
import type { Platform } from './platform.js'
import { Channel, checkOffer, parseVersion, Ref, ReleaseDoc, target as targetOf, ZERO_ID } from './policy.js'
import { rawElements, rawField } from './rawjson.js'

export interface Options {
  /** app ID, e.g. com.example.app */
  app: string
  /** channel to follow; empty: the app's default channel */
  channel?: string
  /** edge base URLs, tried in order */
  edges: string[]
  /** the trusted public keys (release and origin roles), PEM as `capstan keys gen` and the origin write them */
  keys: string
  /** the native app's version, for min_native and major-version rules */
  nativeVersion?: string
  platform: Platform
  /** one request's timeout before the next edge is tried, ms (default 10 s; downloads get 1 s more per MiB allowed) */
  requestTimeout?: number
  /** how long a new release may run unconfirmed before it is reverted, ms (default 10 minutes; <0: only at the next start) */
  confirmTimeout?: number
  /** report events to the edge (default true) */
  events?: boolean
  /** clock, ms (default Date.now) */
  now?: () => number
}

/** Result of one operation; the shape of `capstan device --json` plus the client's own statuses. */
export interface Result {
  status: 'updated' | 'up-to-date' | 'available' | 'failed' | 'confirmed' | 'reverted' | 'pending' | 'switched' | 'staged' | 'ok'
  from: string
  to: string
  /** how the release came: delta, full or files */
  mode?: string
  /** every byte downloaded (compressed answers counted as received) */
  bytes: number
  ms: number
  error?: string
  /** CapstanError code of a failure, or the rule behind a refusal */
  code?: string
  reason?: string
  edge?: string
  reverted?: string
}

interface Installed {
  id: string
  version: string
  folder: string
  /** the signed release envelope as received */
  release: string
}

interface Pending extends Installed {
  since: number
  /** the WebView was switched to it (an unconfirmed launched release is reverted at the next start) */
  launched: boolean
}

interface Event {
  action: string
  app: string
  channel: string
  device: string
  release: string
  version?: string
  bytes?: number
  time: number
  error?: string
  cause?: string
  native?: string
}

interface State {
  deviceId: string
  current: Installed | null
  pending: Pending | null
  failed: string[]
  seqs: Record<string, number>
  keys: { key: string; role: PublicKey['role'] }[]
  keysPinned: string
  channel: string
  outbox: Event[]
}

interface Plan {
  edge: string
  channel: Channel
  target: Ref
  doc: { app: string; version: string; min_native?: string; files: FileSet } | null
  /** the target's file list, when the release carries it (format 1) or once a patch made it */
  files: FileEntry[] | null
  envText: string
  reason?: string
  code?: string
}

const MAX_FAILED = 100
const MAX_FAILED_SENT = 16
const MAX_OUTBOX = 200
const MAX_CHECK_ANSWER = (64 << 10) + (32 << 20)
const MAX_DOC = 2048
const LISTS = 'capstan-lists'

const fail = (code: CapstanError['code'], m: string) => new CapstanError(code, m)

/** Capstan is one app's update client. Open it with Capstan.open, then call start() as the app starts. */
export class Capstan {
  private st!: State
  private bytes = 0
  private timer: ReturnType<typeof setTimeout> | null = null
  private readonly fetch: typeof fetch
  private readonly brotli: BrotliFactory | null
  private readonly key: string
  private readonly now: () => number

  private constructor(private readonly o: Options) {
    this.fetch = o.platform.fetch ?? globalThis.fetch.bind(globalThis)
    this.brotli = o.platform.brotli === undefined ? streamBrotli() : o.platform.brotli
    this.key = `capstan:${o.app}`
    this.now = o.now ?? Date.now
  }

  /** open loads the client's state (making a device id the first time) and pins the shipped keys. */
  static async open(o: Options): Promise<Capstan> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(o.app)) throw fail('bad-manifest', `app id ${JSON.stringify(o.app)}`)
    if (o.channel && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(o.channel)) throw fail('bad-manifest', `channel ${JSON.stringify(o.channel)}`)
    if (!o.edges.length) throw fail('bad-manifest', 'at least one edge URL is required')
    const c = new Capstan(o)
    const keys = parsePublicKeys(o.keys)
    let st: State | null = null
    try {
      const raw = await o.platform.storage.get(c.key)
      if (raw) st = JSON.parse(raw) as State
    } catch (e) {
      throw wrap(e, 'state', 'capstan: read state')
    }
    st ??= { deviceId: newDeviceId(), current: null, pending: null, failed: [], seqs: {}, keys: [], keysPinned: '', channel: '', outbox: [] }
    const pin = toHex(await sha256(utf8.encode(keys.map((k) => `${k.role}\0${base64Encode(k.key)}`).join('\n'))))
    if (st.keysPinned !== pin || !st.keys.length) {
      // A new app build with other keys is the new root of trust.
      st.keys = keys.map((k) => ({ key: base64Encode(k.key), role: k.role }))
      st.keysPinned = pin
    }
    c.st = st
    await c.save()
    return c
  }

  /** deviceId is the stable random id kept in app storage; it decides rollout membership. */
  get deviceId(): string {
    return this.st.deviceId
  }

  /** state returns what the client remembers (for an app's settings screen or a test). */
  get state(): Readonly<{ current: Installed | null; pending: Pending | null; failed: readonly string[] }> {
    return { current: this.st.current, pending: this.st.pending, failed: this.st.failed }
  }

  /**
   * start runs as the app starts, in every bundle (call it before anything
   * that might fail). It reverts a release that was launched and never
   * confirmed (the app came back on the bundle it persisted before), switches
   * to a release staged for the next start, and arms the confirm timeout when
   * the bundle running is itself unconfirmed.
   */
  async start(): Promise<Result> {
    const t0 = this.now()
    const running = await this.running()
    const res: Result = { status: 'ok', from: this.version(), to: this.version(), bytes: 0, ms: 0 }
    const p = this.st.pending
    try {
      if (p && running === p.folder) {
        res.status = 'pending'
        res.from = res.to = p.version
        const left = (this.o.confirmTimeout ?? 600_000) - (this.now() - p.since)
        if ((this.o.confirmTimeout ?? 0) >= 0) this.armRevert(Math.max(left, 0))
      } else if (p && p.launched) {
        res.status = 'reverted'
        res.reverted = p.version
        await this.revert('not confirmed before the app started again')
      } else if (p) {
        res.status = 'switched'
        res.to = p.version
        p.launched = true
        p.since = this.now()
        await this.save()
        await this.serve(p.folder)
      } else if (this.st.current && running !== this.st.current.folder) {
        // The app serves another bundle than the one installed (a store
        // update resets the served folder): it runs its built-in bundle.
        this.st.current = null
        await this.save()
      }
      await this.cleanup()
    } catch (e) {
      const err = wrap(e, 'state', 'capstan: start')
      res.status = 'failed'
      res.error = err.message
      res.code = err.code
    }
    await this.flush(null)
    res.ms = this.now() - t0
    return res
  }

  /** check asks the edges whether an update is available, verifying the answer; it installs nothing. */
  async check(): Promise<Result> {
    const t0 = this.now()
    const res: Result = { status: 'up-to-date', from: this.version(), to: this.version(), bytes: 0, ms: 0 }
    let plan: Plan | null = null
    try {
      plan = await this.plan()
      this.finish(res, plan)
      if (res.status === 'updated') res.status = 'available'
    } catch (e) {
      this.failed(res, e)
    }
    await this.save()
    await this.flush(plan)
    res.bytes = this.takeBytes()
    res.ms = this.now() - t0
    return res
  }

  /**
   * update checks, downloads, verifies and installs an update if there is
   * one. switchNow (the default) serves it at once: the WebView reloads into
   * it, and its start() and confirm() take it from there. With switchNow
   * false it is staged, and the next start() switches to it.
   */
  async update(opts: { switchNow?: boolean } = {}): Promise<Result> {
    const t0 = this.now()
    const res: Result = { status: 'up-to-date', from: this.version(), to: this.version(), bytes: 0, ms: 0 }
    let plan: Plan | null = null
    try {
      plan = await this.plan()
      this.finish(res, plan)
      if (res.status === 'updated' && plan.doc) {
        if (this.st.pending?.id === plan.target.id) {
          res.status = 'staged' // downloaded already, waiting for its start
        } else {
          res.mode = await this.installPlan(plan)
          if (opts.switchNow ?? true) {
            this.st.pending!.launched = true
            await this.save()
            await this.serve(this.st.pending!.folder)
          } else {
            res.status = 'staged'
          }
        }
      } else if (res.status === 'updated') {
        // A rollback to the bundle inside the app: Capacitor's WebView plugin
        // cannot serve the app's own assets again (decision 132).
        res.status = 'up-to-date'
        res.code = 'unsupported'
        res.reason = 'the channel rolls back to the built-in bundle, which this client cannot switch back to'
      }
    } catch (e) {
      this.failed(res, e)
      if (plan && plan.doc) this.event('fail', plan.target, this.bytes, res.error, cause(e))
    }
    res.bytes = this.takeBytes()
    await this.save()
    await this.flush(plan)
    res.ms = this.now() - t0
    return res
  }

  /** confirm marks the running release healthy: the app now starts with it, and it is never reverted. */
  async confirm(): Promise<Result> {
    const t0 = this.now()
    const res: Result = { status: 'confirmed', from: this.version(), to: this.version(), bytes: 0, ms: 0 }
    const p = this.st.pending
    try {
      if (p && (await this.running()) === p.folder) {
        if (this.timer) clearTimeout(this.timer)
        await this.o.platform.webView.persistServerBasePath()
        const old = this.st.current
        this.st.current = { id: p.id, version: p.version, folder: p.folder, release: p.release }
        this.st.pending = null
        res.from = res.to = p.version
        await this.save()
        if (old && old.folder !== p.folder) await this.o.platform.files.remove(old.folder)
        this.event('confirm', { id: p.id, version: p.version }, 0)
        await this.cleanup()
      } else {
        res.reason = 'nothing pending: the running bundle is already confirmed'
      }
    } catch (e) {
      this.failed(res, e)
    }
    await this.save()
    await this.flush(null)
    res.ms = this.now() - t0
    return res
  }

  // —— state ——

  private version(): string {
    return this.st.current?.version ?? ''
  }

  private async save(): Promise<void> {
    try {
      await this.o.platform.storage.set(this.key, JSON.stringify(this.st))
    } catch (e) {
      throw wrap(e, 'state', 'capstan: save state')
    }
  }

  private async running(): Promise<string> {
    const p = await this.o.platform.webView.getServerBasePath()
    // iOS keeps only the last path component of a persisted folder
    // (under Library/NoCloud/ionic_built_snapshots): compare names.
    return (p || '').replace(/\/+$/, '').split('/').pop() ?? ''
  }

  private async serve(folder: string): Promise<void> {
    const path = await this.o.platform.files.serverPath(folder)
    // On a device the WebView reloads at once and the call may never answer.
    await Promise.race([this.o.platform.webView.setServerBasePath(path), new Promise((r) => setTimeout(r, 2000))])
  }

  /** installed is the release the device runs, as a patch base. */
  private installed(): Installed | null {
    return this.st.pending?.launched ? this.st.pending : this.st.current
  }

  private armRevert(ms: number): void {
    if (this.timer) clearTimeout(this.timer)
    // Back to the last confirmed release; with none (a first install) the
    // app goes back to its built-in bundle at the next cold start anyway.
    if (!this.st.current) return
    this.timer = setTimeout(() => {
      const back = this.st.current
      void (async () => {
        // Serving another folder reloads the WebView and ends this script:
        // the state and the events go first, and the folder is removed by the
        // next start's cleanup.
        await this.revert(`not confirmed within ${this.o.confirmTimeout ?? 600_000} ms`, false)
        await this.flush(null)
        if (back) await this.serve(back.folder)
      })().catch(() => {})
    }, ms)
    // In Node (tests, tools) a pending revert must not keep the process alive.
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  /** revert drops the pending release for good: it failed on this device. */
  private async revert(why: string, remove = true): Promise<void> {
    const p = this.st.pending
    if (!p) return
    this.st.pending = null
    if (!this.st.failed.includes(p.id)) this.st.failed = [...this.st.failed, p.id].slice(-MAX_FAILED)
    this.event('revert', p, 0, why)
    await this.save()
    if (remove) await this.o.platform.files.remove(p.folder)
  }

  /** cleanup removes release folders and lists that the state no longer names. */
  private async cleanup(): Promise<void> {
    const keep = new Set([this.st.current?.folder, this.st.pending?.folder, LISTS])
    for (const name of await this.o.platform.files.list('')) {
      if (!keep.has(name) && name.startsWith('capstan-')) await this.o.platform.files.remove(name)
    }
    const lists = new Set<string>()
    for (const r of [this.st.current, this.st.pending]) if (r) lists.add(this.docOf(r.release).files.sha256)
    for (const name of await this.o.platform.files.list(LISTS)) if (!lists.has(name)) await this.o.platform.files.remove(`${LISTS}/${name}`)
  }

  // —— check and verify ——

  private async plan(): Promise<Plan> {
    const cur = this.installed()
    const q = new URLSearchParams({ app: this.o.app })
    if (this.o.channel) q.set('channel', this.o.channel)
    q.set('device', this.st.deviceId)
    if (cur) {
      q.set('current', cur.id)
      q.set('version', cur.version)
    }
    if (this.st.failed.length) q.set('failed', this.st.failed.slice(-MAX_FAILED_SENT).join(','))
    if (this.o.nativeVersion) q.set('native', this.o.nativeVersion)
    const errs: string[] = []
    for (const edge of this.o.edges) {
      let text: string
      try {
        text = utf8d.decode(await this.get(edge, '/v1/check?' + q.toString(), MAX_CHECK_ANSWER, true))
      } catch (e) {
        errs.push(`${edge}: ${e instanceof Error ? e.message : e}`)
        continue
      }
      try {
        let plan: Plan
        try {
          plan = await this.verify(edge, text)
        } catch (e) {
          if (!(e instanceof Unsigned) || !(await this.followRotations(edge))) throw e
          plan = await this.verify(edge, text) // signed by a key the device learnt just now
        }
        this.st.channel = plan.channel.channel
        this.event('check', cur ?? { id: ZERO_ID, version: '' }, 0)
        return plan
      } catch (e) {
        // A bad answer from one edge is that edge's fault: try the next. Replays
        // and expired records say the same of it.
        errs.push(`${edge}: ${e instanceof Error ? e.message : e}`)
        if (e instanceof CapstanError && (e.code === 'replay' || e.code === 'expired') && edge === this.o.edges[this.o.edges.length - 1]) throw e
      }
    }
    throw fail('no-edge', 'no edge answered: ' + errs.join('; '))
  }

  private keys(role: 'release' | 'origin'): Uint8Array[] {
    return keysFor(
      this.st.keys.map((k) => ({ key: base64Decode(k.key), role: k.role })),
      role,
    )
  }

  private async followRotations(edge: string): Promise<boolean> {
    try {
      const text = utf8d.decode(await this.get(edge, '/v1/keys/rotations', 32 * 8192 + 1024, true))
      const list = rawField(text, 'rotations')
      if (!list || list === 'null') return false
      const envs = rawElements(list).map(parseEnvelope)
      const { keys, roles } = await applyRotations(
        this.st.keys.map((k) => ({ key: base64Decode(k.key), role: k.role })),
        envs,
      )
      if (!roles.length) return false
      this.st.keys = keys.map((k) => ({ key: base64Encode(k.key), role: k.role }))
      if (roles.includes('origin')) this.st.seqs = {}
      return true
    } catch {
      return false
    }
  }

  private async verify(edge: string, text: string): Promise<Plan> {
    const ans = JSON.parse(text) as { status?: string; reason?: string; code?: string; channel?: unknown; release?: unknown }
    const chText = rawField(text, 'channel')
    if (!ans.channel || !chText) throw fail('verify', 'answer has no channel record')
    const chEnv = parseEnvelope(chText)
    if (chEnv.signed.length > 4096) throw fail('verify', 'channel record over 4096 bytes')
    await verifyEnvelope(chEnv, this.keys('origin'))
    const ch = decodeJSON(chEnv) as Channel
    if (ch.type !== 'capstan.channel/v1' || typeof ch.seq !== 'number' || !ch.release || typeof ch.release.id !== 'string') throw fail('verify', 'channel record: bad fields')
    const want = this.o.channel ?? ''
    if (ch.app !== this.o.app || (ch.channel !== want && (want !== '' || !ch.default))) {
      throw fail('wrong-record', `got ${ch.app}/${ch.channel}, want ${want ? this.o.app + '/' + want : 'the default channel of ' + this.o.app}`)
    }
    const key = `${ch.app}/${ch.channel}`
    const seen = this.st.seqs[key] ?? 0
    if (ch.seq < seen) throw fail('replay', `channel record is older than one already seen (replay): seq ${ch.seq} after ${seen}`)
    const exp = Date.parse(ch.expires)
    if (!(exp > this.now())) throw fail('expired', `channel record has expired at ${ch.expires} (the edge may be freezing this device)`)
    this.st.seqs[key] = ch.seq
    const cur = this.installed()
    const curId = cur?.id ?? ZERO_ID
    const plan: Plan = { edge, channel: ch, target: { id: curId, version: cur?.version ?? '' }, doc: null, files: null, envText: '' }
    const t = await targetOf(ch, this.st.deviceId, curId)
    if (!t || t.id === curId) return plan
    const offer = { release: null as ReleaseDoc | null, target: t, currentVersion: cur?.version ?? '', native: this.o.nativeVersion ?? '', failed: this.st.failed }
    const r0 = checkOffer(ch, offer)
    if (r0 && (r0.code === 'failed_on_device' || r0.code === 'disable_downgrade')) return { ...plan, reason: r0.reason, code: r0.code }
    plan.target = t
    if (ans.status === 'blocked') return { ...plan, target: plan.target.id === curId ? plan.target : { id: curId, version: cur?.version ?? '' }, reason: ans.reason, code: ans.code }
    if (t.id === ZERO_ID) return plan
    const relText = rawField(text, 'release')
    if (!relText || relText === 'null') throw fail('verify', `the channel offers ${t.version} but the edge sent no release document`)
    const env = parseEnvelope(relText)
    if (toHex(await sha256(env.signed)) !== t.id) throw fail('verify', `release document is not the release ${t.id} the signed channel record names`)
    await verifyEnvelope(env, this.keys('release'))
    const { doc, files } = await decodeRelease(env)
    if (doc.app !== this.o.app || doc.version !== t.version) throw fail('verify', `release document is ${doc.app} ${doc.version}, the channel names ${this.o.app} ${t.version}`)
    offer.release = doc
    const r = checkOffer(ch, offer)
    if (r) return { ...plan, target: { id: curId, version: cur?.version ?? '' }, reason: r.reason, code: r.code }
    if (t.sealed) throw fail('unsupported', `release ${t.version} is encrypted; this client does not decrypt releases`)
    return { ...plan, doc, files, envText: relText }
  }

  private finish(res: Result, plan: Plan): void {
    res.edge = plan.edge
    if (plan.code) res.code = plan.code
    const cur = this.installed()
    if (plan.reason || plan.target.id === (cur?.id ?? ZERO_ID)) {
      res.status = 'up-to-date'
      res.reason = plan.reason
    } else {
      res.status = 'updated'
      res.to = plan.target.version
    }
  }

  private failed(res: Result, e: unknown): void {
    const err = wrap(e, 'state', 'capstan')
    res.status = 'failed'
    res.error = err.message
    res.code = err.code
  }

  // —— install ——

  private async installPlan(plan: Plan): Promise<string> {
    if (this.st.pending) {
      // A newer release replaces one staged or unconfirmed.
      await this.o.platform.files.remove(this.st.pending.folder)
      this.st.pending = null
    }
    const folder = 'capstan-' + plan.target.id.slice(0, 16)
    await this.o.platform.files.remove(folder)
    const mode = await this.populate(plan, folder)
    // The list just verified is what the next update starts from; it is
    // stored before the state names it.
    const list = encodeFileList(plan.files!)
    const name = `${LISTS}/${plan.doc!.files.sha256}`
    await this.o.platform.files.remove(name)
    await this.o.platform.files.write(name, list, 0o644)
    this.st.pending = { id: plan.target.id, version: plan.target.version, folder, release: plan.envText, since: this.now(), launched: false }
    await this.save()
    this.event('download', plan.target, this.bytes)
    this.event('install', plan.target, 0)
    return mode
  }

  /** populate fills folder: a patch from the installed release, else the full stream, else file by file; each from every edge in turn. */
  private async populate(plan: Plan, folder: string): Promise<string> {
    const errs: string[] = []
    const cur = this.installed()
    let base: { id: string; files: FileEntry[]; folder: string } | null = null
    if (cur) {
      try {
        base = { id: cur.id, files: await this.filesOf(cur), folder: cur.folder }
      } catch (e) {
        errs.push(`base: ${e instanceof Error ? e.message : e}`)
      }
    }
    const attempts: [string, typeof base][] = base ? [['delta', base], ['full', null]] : [['full', null]]
    for (const [mode, b] of attempts) {
      for (const edge of this.o.edges) {
        try {
          await this.fetchPatch(plan, edge, b, folder)
          return mode
        } catch (e) {
          errs.push(`${mode} from ${edge}: ${e instanceof Error ? e.message : e}`)
          await this.o.platform.files.remove(folder)
        }
      }
    }
    try {
      await this.populateFiles(plan, folder, base)
      return 'files'
    } catch (e) {
      await this.o.platform.files.remove(folder)
      const err = wrap(e, 'network', 'files')
      throw new CapstanError(err.code, [...errs, `files: ${err.message}`].join('; '), { cause: e })
    }
  }

  private async fetchPatch(plan: Plan, edge: string, base: { id: string; files: FileEntry[]; folder: string } | null, folder: string): Promise<void> {
    const total = plan.doc!.files.size
    const limit = total + Math.floor(total / 8) + (1 << 20)
    let path = `/v1/patches/${base?.id ?? ZERO_ID}/${plan.target.id}`
    if (base && !this.brotli) path += '?codecs=zstd' // decision 131
    const body = await this.stream(edge, path, limit)
    const { files } = await applyPatch(
      body,
      { id: fromHex(base?.id ?? ZERO_ID)!, files: base?.files ?? [], dir: base ? this.folder(base.folder) : null },
      { id: fromHex(plan.target.id)!, files: plan.doc!.files },
      this.folder(folder),
      { brotli: this.brotli },
    )
    plan.files = files
  }

  private async populateFiles(plan: Plan, folder: string, base: { files: FileEntry[]; folder: string } | null): Promise<void> {
    if (!plan.files) plan.files = await this.fetchList(plan)
    const have = new Map<string, string>()
    for (const f of base?.files ?? []) have.set(toHex(f.sha256), f.path)
    const out = this.folder(folder)
    for (const f of plan.files) {
      const sum = toHex(f.sha256)
      let data: Uint8Array | null = null
      const local = have.get(sum)
      if (local && base) {
        try {
          const b = await this.o.platform.files.read(`${base.folder}/${local}`)
          if (b.length === f.size && toHex(await sha256(b)) === sum) data = b
        } catch {}
      }
      const errs: string[] = []
      for (const edge of data ? [] : this.o.edges) {
        try {
          const b = await this.get(edge, `/v1/blobs/${sum}`, f.size, false)
          if (b.length !== f.size || toHex(await sha256(b)) !== sum) throw fail('verify', `${f.path} does not match the signed file list`)
          data = b
          break
        } catch (e) {
          errs.push(`${edge}: ${e instanceof Error ? e.message : e}`)
        }
      }
      if (!data) throw fail('network', `download ${f.path}: ${errs.join('; ')}`)
      await out.write(f.path, data, f.mode)
    }
  }

  /** fetchList downloads the target's canonical file list and checks it against the signed hash. */
  private async fetchList(plan: Plan): Promise<FileEntry[]> {
    const fs = plan.doc!.files
    const errs: string[] = []
    for (const edge of this.o.edges) {
      try {
        const b = await this.get(edge, `/v1/blobs/${fs.sha256}`, maxListBytes(fs), false)
        if (toHex(await sha256(b)) !== fs.sha256) throw fail('verify', 'file list does not match the signed release document')
        const files = decodeFileList(b)
        if (!sameFileSet(await fileSetOf(files), fs)) throw fail('verify', 'file list is not the one the release signs')
        return files
      } catch (e) {
        errs.push(`${edge}: ${e instanceof Error ? e.message : e}`)
      }
    }
    throw fail('network', `file list of ${plan.target.version}: ${errs.join('; ')}`)
  }

  /** filesOf returns the verified file list of an installed release. */
  private async filesOf(r: Installed): Promise<FileEntry[]> {
    const { doc, files } = await decodeRelease(parseEnvelope(r.release))
    if (files) return files
    const b = await this.o.platform.files.read(`${LISTS}/${doc.files.sha256}`)
    const list = decodeFileList(b)
    if (!sameFileSet(await fileSetOf(list), doc.files)) throw fail('verify', `stored file list of ${r.version} does not match its release`)
    return list
  }

  private docOf(release: string): { files: FileSet } {
    const env = parseEnvelope(release)
    return JSON.parse(utf8d.decode(env.signed)) as { files: FileSet }
  }

  /** folder is a release folder as the applier sees it: paths checked again, writes inside it only. */
  private folder(name: string): TargetFolder & BaseFiles {
    const files = this.o.platform.files
    const inside = (p: string) => {
      const bad = validatePath(p)
      if (bad) throw fail('unsafe-path', bad)
      return `${name}/${p}`
    }
    return {
      write: (p, data, mode) => files.write(inside(p), data, mode),
      read: (p) => files.read(inside(p)),
    }
  }

  // —— network ——

  private takeBytes(): number {
    const n = this.bytes
    this.bytes = 0
    return n
  }

  private async request(edge: string, path: string, limit: number): Promise<{ resp: Response; done: () => void; signal: AbortSignal }> {
    const timeout = (this.o.requestTimeout ?? 10_000) + Math.floor(limit / (1 << 20)) * 1000
    const ctl = new AbortController()
    const t = setTimeout(() => ctl.abort(new CapstanError('network', `${edge}${path}: timed out`)), timeout)
    let resp: Response
    try {
      resp = await this.fetch(edge.replace(/\/+$/, '') + path, { signal: ctl.signal, cache: 'no-store' })
    } catch (e) {
      clearTimeout(t)
      throw wrap(e, 'network', `${edge}${path}`)
    }
    if (resp.status !== 200) {
      const body = await resp.text().catch(() => '')
      this.bytes += Number(resp.headers.get('content-length') ?? body.length) || 0
      clearTimeout(t)
      throw fail('network', `${edge}${path}: ${resp.status} ${body.slice(0, 200)}`)
    }
    const cl = Number(resp.headers.get('content-length') ?? -1)
    if (cl > limit && !resp.headers.get('content-encoding')) {
      clearTimeout(t)
      ctl.abort()
      throw fail('too-large', `${edge}${path}: ${cl} bytes is more than the ${limit} expected`)
    }
    return { resp, done: () => clearTimeout(t), signal: ctl.signal }
  }

  /**
   * stream returns a body as chunks, bounded to limit bytes and counted.
   * Patches and blobs are never content-encoded, so what arrives is what
   * crossed the network.
   */
  private async stream(edge: string, path: string, limit: number): Promise<AsyncIterable<Uint8Array>> {
    const { resp, done } = await this.request(edge, path, limit)
    const reader = resp.body!.getReader()
    let n = 0
    const self = this
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            let r: ReadableStreamReadResult<Uint8Array>
            try {
              r = await reader.read()
            } catch (e) {
              throw wrap(e, 'network', `${edge}${path}`)
            }
            if (r.done) return
            n += r.value.length
            self.bytes += r.value.length
            if (n > limit) throw fail('too-large', `${edge}${path}: more than the ${limit} bytes expected`)
            yield r.value
          }
        } finally {
          done()
          reader.cancel().catch(() => {})
        }
      },
    }
  }

  /** get reads a whole body; for JSON answers (compressed by the edge when asked) it counts the bytes received. */
  private async get(edge: string, path: string, limit: number, json: boolean): Promise<Uint8Array> {
    const { resp, done } = await this.request(edge, path, limit)
    try {
      const parts: Uint8Array[] = []
      let n = 0
      const reader = resp.body!.getReader()
      for (;;) {
        const r = await reader.read()
        if (r.done) break
        n += r.value.length
        if (n > limit) {
          reader.cancel().catch(() => {})
          throw fail('too-large', `${edge}${path}: more than the ${limit} bytes expected`)
        }
        parts.push(r.value)
      }
      const wire = Number(resp.headers.get('content-length'))
      this.bytes += json && resp.headers.get('content-encoding') && wire > 0 ? wire : n
      const out = new Uint8Array(n)
      let off = 0
      for (const p of parts) {
        out.set(p, off)
        off += p.length
      }
      return out
    } catch (e) {
      throw wrap(e, 'network', `${edge}${path}`)
    } finally {
      done()
    }
  }

  // —— events ——

  private event(action: string, rel: { id: string; version: string }, bytes: number, error?: string, cause?: string): void {
    if (this.o.events === false) return
    const channel = this.st.channel || this.o.channel
    if (!channel) return
    const ev: Event = { action, app: this.o.app, channel, device: this.st.deviceId, release: rel.id, time: this.now() }
    if (rel.version) ev.version = rel.version
    if (bytes) ev.bytes = bytes
    if (error) ev.error = error.slice(0, 1024)
    if (cause) ev.cause = cause
    if (action === 'check' && this.o.nativeVersion) ev.native = this.o.nativeVersion
    this.st.outbox = [...this.st.outbox, ev].slice(-MAX_OUTBOX)
  }

  /**
   * flush posts queued events to the edge that answered, or to each edge in
   * turn. They stay queued on network errors, 408, 429 and 5xx, and are
   * dropped on other refusals, so one bad batch cannot block the queue.
   */
  private async flush(plan: Plan | null): Promise<void> {
    if (!this.st.outbox.length) return
    const edges = plan ? [plan.edge, ...this.o.edges.filter((e) => e !== plan.edge)] : this.o.edges
    const body = JSON.stringify(this.st.outbox)
    for (const e of edges) {
      try {
        const ctl = new AbortController()
        const t = setTimeout(() => ctl.abort(), this.o.requestTimeout ?? 10_000)
        const r = await this.fetch(e.replace(/\/+$/, '') + '/v1/events', { method: 'POST', body, headers: { 'Content-Type': 'application/json' }, signal: ctl.signal })
        clearTimeout(t)
        await r.arrayBuffer().catch(() => {})
        if ((r.status >= 200 && r.status < 300) || (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429)) {
          this.st.outbox = []
          break
        }
      } catch {}
    }
    await this.save().catch(() => {})
  }
}

function cause(e: unknown): string {
  if (e instanceof CapstanError && e.code === 'verify') return 'verify'
  if (e instanceof CapstanError && e.code === 'state') return 'install'
  return 'download'
}

function decodeJSON(env: Envelope): unknown {
  try {
    return JSON.parse(utf8d.decode(env.signed))
  } catch (e) {
    throw wrap(e, 'verify', 'signed document')
  }
}

/** decodeRelease reads a release in either format: a document (v2) or a full manifest (v1, with its files). */
async function decodeRelease(env: Envelope): Promise<{ doc: { app: string; version: string; min_native?: string; files: FileSet }; files: FileEntry[] | null }> {
  const d = decodeJSON(env) as { type?: string; app?: string; version?: string; min_native?: string; files?: unknown }
  const ok = typeof d.app === 'string' && typeof d.version === 'string' && parseVersion(d.version) && (!d.min_native || parseVersion(d.min_native))
  if (d.type === 'capstan.release/v2') {
    const fs = d.files as FileSet
    if (!ok || env.signed.length > MAX_DOC || !fs || !Number.isSafeInteger(fs.count) || !Number.isSafeInteger(fs.size) || fs.count < 0 || fs.count > 100_000 || fs.size < 0 || !/^[0-9a-f]{64}$/.test(String(fs.sha256))) {
      throw fail('verify', 'release document: bad fields')
    }
    return { doc: { app: d.app!, version: d.version!, min_native: d.min_native, files: fs }, files: null }
  }
  if (d.type === 'capstan.release/v1' && ok && Array.isArray(d.files)) {
    const files = (d.files as { path: string; size: number; mode: number; sha256: string }[]).map((f) => ({ path: f.path, size: f.size, mode: f.mode, sha256: fromHex(String(f.sha256)) ?? new Uint8Array(0) }))
    if (files.some((f) => f.sha256.length !== 32 || typeof f.path !== 'string' || !Number.isSafeInteger(f.size) || !Number.isSafeInteger(f.mode))) throw fail('verify', 'manifest: bad file')
    const why = validateFiles(files)
    if (why) throw fail('verify', `manifest: ${why}`)
    return { doc: { app: d.app!, version: d.version!, min_native: d.min_native, files: await fileSetOf(files) }, files }
  }
  throw fail('verify', `release type ${JSON.stringify(d.type)}`)
}

function newDeviceId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID()
  const b = crypto.getRandomValues(new Uint8Array(16))
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const h = toHex(b)
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}
