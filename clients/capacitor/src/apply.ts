// The patch applier: delta/apply.go in TypeScript, bound for bound. It reads
// a patch stream (format 2, docs/decisions/013) and writes every file of the
// target release into a fresh folder, then checks the file list it built
// against the signed file set. Nothing in the patch is trusted.
import { BrotliFactory, chunkSource, decodedSource } from './codecs.js'
import { concat, sha256, toHex } from './bytes.js'
import { CapstanError, wrap } from './errors.js'
import { decodePath, FileEntry, FileSet, fileSetOf, MAX_FILES, MAX_PATH_LEN, sameFileSet, sortFiles, validatePath } from './filelist.js'
import { corrupt, Reader, Source, sourceOf } from './reader.js'

const MAGIC = 'CAPDELTA'
const FORMAT_VERSION = 2
const ID_PREFIX = 8
export const HEADER_SIZE = 8 + 1 + 1 + ID_PREFIX + ID_PREFIX

const FRAME_END = 0
const REC_COPY = 1
const REC_DUP = 2
const REC_LITERAL = 3
const REC_DELTA = 4
const REC_BSDIFF = 5
const REC_DROP = 6
const SRC_BASE = 0
const SRC_TARGET = 1
const MAX_SOURCES = 4096
const MAX_INFLIGHT = 8
const MAX_BLOCK_OPS = 4096

/** Bounds, as delta.ApplyConfig; zero or absent means the Go defaults. */
export interface ApplyOptions {
  /** largest file written or read as a base file (default 1 GiB) */
  maxFileSize?: number
  /** largest release, sum of file sizes (default 4 GiB) */
  maxTotalSize?: number
  /** largest zstd window a frame may ask for (default 16 MiB) */
  maxWindow?: number
  /** brotli decoder; without one a brotli frame fails with code "unsupported" */
  brotli?: BrotliFactory | null
  /** bytes of delta source files kept in memory at once, beyond the one in use (default 64 MiB) */
  sourceBudget?: number
  /** checked between files: abort by making it throw */
  signal?: AbortSignal
}

/** The installed base release's files, read by path. */
export interface BaseFiles {
  /** read returns the file's bytes; a missing file throws. */
  read(path: string): Promise<Uint8Array>
}

/**
 * The release folder being written. write must create a new file (never
 * follow or replace an existing entry) strictly inside the folder; read
 * reads back a file written earlier.
 */
export interface TargetFolder {
  write(path: string, data: Uint8Array, mode: number): Promise<void>
  read(path: string): Promise<Uint8Array>
}

export interface Base {
  /** release ID (32 bytes); all zeros for a device with nothing installed */
  id: Uint8Array
  /** the base's verified file list, sorted by path */
  files: FileEntry[]
  dir: BaseFiles | null
}

export interface Target {
  id: Uint8Array
  files: FileSet
}

export interface ApplyStats {
  files: number
  kept: number
  copies: number
  dups: number
  deltas: number
  literals: number
  /** bytes read from the patch */
  patchBytes: number
  /** bytes of files written from records (kept files excluded) */
  written: number
}

/**
 * applyPatch reads a patch and writes the target release into dir. It
 * returns the target's sorted file list only after its count, size and
 * canonical hash equal target.files. Every failure is a CapstanError; on
 * failure dir holds a partial release and must be discarded.
 */
export async function applyPatch(
  patch: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array,
  base: Base,
  target: Target,
  dir: TargetFolder,
  opts: ApplyOptions = {},
): Promise<{ files: FileEntry[]; stats: ApplyStats }> {
  try {
    return await new Applier(base, target, dir, opts).run(sourceOf(patch))
  } catch (e) {
    throw wrap(e, 'corrupt', 'delta: apply')
  }
}

interface Ctl {
  diff: number
  extra: number
  seek: number
}

class Applier {
  private maxFileSize: number
  private maxTotalSize: number
  private maxWindow: number
  private brotli: BrotliFactory | null
  private sourceBudget: number
  private b!: Reader
  private dropped: boolean[]
  private dropSet = false
  private keptSize = 0
  private maxRecords = 0
  private written: FileEntry[] = []
  private kept: FileEntry[] = []
  private size = 0
  private paths = new Set<string>()
  private st: ApplyStats = { files: 0, kept: 0, copies: 0, dups: 0, deltas: 0, literals: 0, patchBytes: 0, written: 0 }
  // Delta sources in memory, least recently used first, as promises: the
  // sources a delta names are loaded together before its ops need them.
  private cache = new Map<string, { data: Promise<Uint8Array>; size: number }>()
  private cacheBytes = 0
  // Writes in flight: the folder's storage (IndexedDB, the Capacitor bridge)
  // answers each write after a round trip, so decoding goes on meanwhile.
  // At most MAX_INFLIGHT at once; a read of a file waits for its write.
  private writes = new Map<string, Promise<void>>()
  private writeErr: unknown = null

  constructor(
    private base: Base,
    private target: Target,
    private dir: TargetFolder,
    private opts: ApplyOptions,
  ) {
    this.maxFileSize = opts.maxFileSize || 1 << 30
    this.maxTotalSize = opts.maxTotalSize || 4 * 2 ** 30
    this.maxWindow = opts.maxWindow || 16 << 20
    this.brotli = opts.brotli ?? null
    this.sourceBudget = opts.sourceBudget || 64 << 20
    this.dropped = new Array(base.files.length).fill(false)
  }

  async run(src: Source): Promise<{ files: FileEntry[]; stats: ApplyStats }> {
    const t = this.target.files
    if (t.count < 0 || t.count > MAX_FILES || t.size < 0 || !Number.isSafeInteger(t.size)) {
      throw new CapstanError('bad-manifest', `delta: invalid target file set (${t.count} files, ${t.size} bytes)`)
    }
    if (t.size > this.maxTotalSize) throw new CapstanError('too-large', `delta: release is ${t.size} bytes, limit ${this.maxTotalSize}`)
    if (this.base.files.length > MAX_FILES) throw new CapstanError('bad-manifest', `delta: base has ${this.base.files.length} files`)

    const raw = new Reader(src)
    const hb = new Uint8Array(HEADER_SIZE)
    let got = 0
    while (got < HEADER_SIZE) {
      const c = await raw.take(HEADER_SIZE - got)
      if (c.length === 0) break
      hb.set(c, got)
      got += c.length
    }
    this.header(hb.subarray(0, got))

    for (;;) {
      const codec = await raw.byte()
      if (codec < 0) throw corrupt('reading frame: unexpected EOF')
      if (codec === FRAME_END) break
      if (codec > 3) throw new CapstanError('unsupported', `delta: unsupported patch format: frame codec ${codec}`)
      const chunks = chunkSource(raw)
      // A frame's decoded records are bounded by the release it makes (plus
      // their headers); the decoder never needs to produce more.
      const body = decodedSource(codec, chunks, this.maxWindow, this.brotli, t.size + (1 << 20) * 64)
      this.b = new Reader(body)
      for (;;) {
        this.opts.signal?.throwIfAborted()
        const kind = await this.b.byte()
        if (kind < 0) break
        await this.record(kind)
      }
      // The codec stopped: its frame's chunks must stop exactly here too.
      if ((await chunks.next()) !== null) throw corrupt('data after the end of a frame')
    }
    if (!(await raw.atEnd())) throw corrupt('data after the end of the stream')
    this.st.patchBytes = raw.n
    if (!this.dropSet) this.startFiles()
    await this.keepBase()
    const files = this.written.concat(this.kept)
    sortFiles(files)
    const set = await fileSetOf(files)
    if (!sameFileSet(set, t)) {
      if (set.count !== t.count || set.size !== t.size) {
        throw new CapstanError('verify', `delta: the patch made ${set.count} files of ${set.size} bytes, the release has ${t.count} files of ${t.size} bytes`)
      }
      throw new CapstanError('verify', 'delta: the files made (paths, modes or contents) are not the release\'s file list')
    }
    this.st.files = files.length
    return { files, stats: this.st }
  }

  private header(b: Uint8Array): void {
    const magic = String.fromCharCode(...b.subarray(0, 8))
    if (b.length < 9 || magic !== MAGIC) throw corrupt('not a Capstan patch (bad magic)')
    if (b[8] !== FORMAT_VERSION) throw new CapstanError('unsupported', `delta: unsupported patch format: format version ${b[8]} (this client reads ${FORMAT_VERSION})`)
    if (b.length < HEADER_SIZE) throw corrupt('short header')
    if (b[9] !== 0) throw new CapstanError('unsupported', `delta: unsupported patch format: header flags ${b[9]}`)
    const hb = b.subarray(10, 10 + ID_PREFIX)
    const ht = b.subarray(10 + ID_PREFIX, HEADER_SIZE)
    if (!prefixIs(hb, this.base.id)) throw new CapstanError('wrong-base', `delta: the patch starts from ${toHex(hb)}…, the device has ${toHex(this.base.id)}`)
    if (!prefixIs(ht, this.target.id)) throw new CapstanError('wrong-target', `delta: the patch makes ${toHex(ht)}…, wanted ${toHex(this.target.id)}`)
  }

  private async record(kind: number): Promise<void> {
    if (kind === REC_DROP) return this.drop()
    if (kind === 0 || kind > REC_BSDIFF) throw corrupt(`unknown record kind ${kind}`)
    if (kind === REC_BSDIFF) {
      // The origin never builds BSDIFF40 records (delta.Config.BSDiff is nil
      // there); a bzip2 decoder is not worth its bytes here (decision 130).
      throw new CapstanError('unsupported', 'delta: BSDIFF40 records are not supported by this client')
    }
    if (!this.dropSet) this.startFiles()
    if (this.written.length >= this.maxRecords) throw corrupt(`more files than the release's ${this.target.files.count}`)
    const p = await this.path()
    if (this.paths.has(p)) throw corrupt(`second record for ${p}`)
    const mode = await this.b.uvarint(0o777, 'file mode')
    const left = this.target.files.size - this.keptSize - this.size
    if (left < 0) throw corrupt('the kept base files alone are larger than the release')
    let size: number
    let baseIdx = 0
    let dupIdx = 0
    if (kind === REC_COPY) {
      baseIdx = await this.baseIndex('copy source')
      size = this.base.files[baseIdx].size
    } else if (kind === REC_DUP) {
      dupIdx = await this.ordinal('duplicate source')
      size = this.written[dupIdx].size
    } else {
      size = await this.b.uvarint(left, 'file size')
    }
    if (size > left) throw corrupt(`${p} would take the release past its ${this.target.files.size} bytes`)
    if (size > this.maxFileSize) throw new CapstanError('too-large', `delta: ${p} is ${size} bytes, limit ${this.maxFileSize}`)

    let data: Uint8Array
    switch (kind) {
      case REC_COPY: {
        const bf = this.base.files[baseIdx]
        data = await this.readBase(bf.path, bf.size)
        if (!sameBytes(await sha256(data), bf.sha256)) throw new CapstanError('wrong-base', `delta: base file ${bf.path} has changed on this device`)
        this.st.copies++
        break
      }
      case REC_DUP: {
        data = await this.readTarget(this.written[dupIdx])
        this.st.dups++
        break
      }
      case REC_LITERAL: {
        data = await this.literal(p, size)
        this.st.literals++
        break
      }
      default:
        data = await this.delta(p, size)
        this.st.deltas++
    }
    if (data.length !== size) throw corrupt(`${p} is ${data.length} bytes, its record says ${size}`)
    const sum = kind === REC_COPY ? this.base.files[baseIdx].sha256 : await sha256(data)
    await this.write(p, data, mode)
    this.written.push({ path: p, size, mode, sha256: sum })
    this.paths.add(p)
    this.size += size
    if (kind !== REC_COPY) this.st.written += size
  }

  private async write(p: string, data: Uint8Array, mode: number): Promise<void> {
    if (this.writes.size >= MAX_INFLIGHT) await this.settle(MAX_INFLIGHT - 1)
    const w = this.dir.write(p, data, mode).then(
      () => void this.writes.delete(p),
      (e) => {
        this.writes.delete(p)
        this.writeErr ??= wrap(e, 'unsafe-path', `delta: create ${p}`)
      },
    )
    this.writes.set(p, w)
  }

  /** settle waits until at most n writes are in flight, and reports the first failed one. */
  private async settle(n: number): Promise<void> {
    while (this.writes.size > n) await Promise.race(this.writes.values())
    if (this.writeErr) throw this.writeErr
  }

  private async path(): Promise<string> {
    const n = await this.b.uvarint(MAX_PATH_LEN, 'file path length')
    const buf = new Uint8Array(n)
    if (!(await this.b.exact(buf, 0, n))) throw corrupt('reading file path: unexpected EOF')
    const p = decodePath(buf)
    const bad = p === null ? 'file path is not valid UTF-8' : validatePath(p)
    if (bad) throw new CapstanError('unsafe-path', `delta: unsafe path: file path: ${bad}`)
    return p!
  }

  private async baseIndex(what: string): Promise<number> {
    if (this.base.files.length === 0) throw corrupt(`${what} in a patch without a base`)
    return this.b.uvarint(this.base.files.length - 1, what)
  }

  private async ordinal(what: string): Promise<number> {
    if (this.written.length === 0) throw corrupt(`${what} before any file was written`)
    return this.b.uvarint(this.written.length - 1, what)
  }

  private startFiles(): void {
    this.dropSet = true
    let kept = 0
    this.base.files.forEach((bf, i) => {
      if (!this.dropped[i]) {
        kept++
        this.keptSize += bf.size
      }
    })
    this.maxRecords = Math.max(0, this.target.files.count - kept)
  }

  private async drop(): Promise<void> {
    if (this.dropSet) throw corrupt('a list of dropped files after the first file record, or twice')
    const nb = this.base.files.length
    const n = await this.b.uvarint(nb, 'dropped file count')
    let next = 0
    for (let k = 0; k < n; k++) {
      const gap = await this.b.uvarint(nb - next - 1, 'dropped file')
      const i = next + gap
      this.dropped[i] = true
      next = i + 1
    }
    this.startFiles()
  }

  private async keepBase(): Promise<void> {
    const keep: FileEntry[] = []
    for (let i = 0; i < this.base.files.length; i++) {
      if (this.dropped[i]) continue
      const bf = this.base.files[i]
      if (this.paths.has(bf.path)) throw corrupt(`${bf.path} is both kept and written`)
      keep.push(bf)
    }
    // Kept files are read, hashed and written MAX_INFLIGHT at a time.
    let next = 0
    const worker = async () => {
      while (next < keep.length) {
        this.opts.signal?.throwIfAborted()
        const bf = keep[next++]
        const data = await this.readBase(bf.path, bf.size)
        if (!sameBytes(await sha256(data), bf.sha256)) throw new CapstanError('wrong-base', `delta: base file ${bf.path} has changed on this device`)
        await this.write(bf.path, data, bf.mode)
      }
    }
    await Promise.all(Array.from({ length: Math.min(MAX_INFLIGHT, keep.length) }, worker))
    await this.settle(0)
    this.kept.push(...keep)
    this.st.kept += keep.length
  }

  private async readBase(p: string, size: number): Promise<Uint8Array> {
    if (!this.base.dir) throw new CapstanError('wrong-base', `delta: no base release: ${p}`)
    if (size > this.maxFileSize) throw new CapstanError('too-large', `delta: base file ${p} is ${size} bytes, limit ${this.maxFileSize}`)
    let data: Uint8Array
    try {
      data = await this.base.dir.read(p)
    } catch (e) {
      throw wrap(e, 'wrong-base', `delta: open base file ${p}`)
    }
    if (data.length !== size) throw new CapstanError('wrong-base', `delta: base file ${p} does not have ${size} bytes`)
    return data
  }

  private async readTarget(f: FileEntry): Promise<Uint8Array> {
    await this.writes.get(f.path)
    if (this.writeErr) throw this.writeErr
    let data: Uint8Array
    try {
      data = await this.dir.read(f.path)
    } catch (e) {
      throw wrap(e, 'state', `delta: reopen ${f.path}`)
    }
    if (data.length !== f.size) throw new CapstanError('verify', `delta: ${f.path} has another size than expected`)
    return data
  }

  /** literal reads size bytes, growing with the bytes actually there (a patch must not pick our allocation). */
  private async literal(p: string, size: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = []
    let got = 0
    while (got < size) {
      const c = await this.b.take(size - got)
      if (c.length === 0) throw corrupt(`literal ${p}: unexpected EOF`)
      parts.push(c.slice())
      got += c.length
    }
    return concat(parts, size)
  }

  /** sources reads a delta's source list: the parts of its virtual old file. */
  private async sources(): Promise<{ parts: { off: number; size: number; load: () => Promise<Uint8Array>; key: string }[]; size: number }> {
    const n = await this.b.uvarint(MAX_SOURCES, 'source count')
    if (n === 0) throw corrupt('delta without sources')
    const parts: { off: number; size: number; load: () => Promise<Uint8Array>; key: string }[] = []
    let total = 0
    for (let k = 0; k < n; k++) {
      const kind = await this.b.byte()
      if (kind < 0) throw corrupt('reading source: unexpected EOF')
      if (kind === SRC_BASE) {
        const bf = this.base.files[await this.baseIndex('source base file')]
        parts.push({ off: total, size: bf.size, key: 'b/' + bf.path, load: () => this.readBase(bf.path, bf.size) })
        total += bf.size
      } else if (kind === SRC_TARGET) {
        const sf = this.written[await this.ordinal('source file')]
        parts.push({ off: total, size: sf.size, key: 't/' + sf.path, load: () => this.readTarget(sf) })
        total += sf.size
      } else {
        throw corrupt(`source kind ${kind}`)
      }
    }
    return { parts, size: total }
  }

  /** source returns a loaded source file, keeping recently used ones within the byte budget. */
  private source(key: string, size: number, load: () => Promise<Uint8Array>): Promise<Uint8Array> {
    const hit = this.cache.get(key)
    if (hit) {
      this.cache.delete(key)
      this.cache.set(key, hit)
      return hit.data
    }
    const data = load()
    data.catch(() => {}) // awaited by whoever needs it; a prefetch nobody uses must not go unhandled
    this.cache.set(key, { data, size })
    this.cacheBytes += size
    for (const [k, v] of this.cache) {
      if (this.cacheBytes <= this.sourceBudget || k === key) break
      this.cache.delete(k)
      this.cacheBytes -= v.size
    }
    return data
  }

  /** prefetch starts loading a delta's sources, in order, as far as the budget allows. */
  private prefetch(parts: { size: number; key: string; load: () => Promise<Uint8Array> }[]): void {
    let bytes = 0
    for (const pt of parts) {
      if (pt.size === 0) continue
      bytes += pt.size
      if (bytes > this.sourceBudget) break
      void this.source(pt.key, pt.size, pt.load)
    }
  }

  /** delta applies a recDelta record (bsdiff-style ops over the concatenated sources). */
  private async delta(p: string, size: number): Promise<Uint8Array> {
    const { parts, size: oldSize } = await this.sources()
    this.prefetch(parts)
    let out = new Uint8Array(Math.min(size, 1 << 16))
    const grow = (need: number) => {
      if (need <= out.length) return
      const next = new Uint8Array(Math.min(size, Math.max(need, out.length * 2)))
      next.set(out)
      out = next
    }
    // readOld adds old bytes at position rp to dst[0:k].
    const addOld = async (dst: Uint8Array, k: number, rp: number) => {
      let i = 0
      while (i < k) {
        const off = rp + i
        let lo = 0
        let hi = parts.length - 1
        while (lo < hi) {
          const mid = (lo + hi + 1) >> 1
          if (parts[mid].off <= off) lo = mid
          else hi = mid - 1
        }
        // Skip empty parts that share the offset.
        while (lo < parts.length && parts[lo].off + parts[lo].size <= off) lo++
        const pt = parts[lo]
        const data = await this.source(pt.key, pt.size, pt.load)
        const from = off - pt.off
        const n = Math.min(k - i, pt.size - from)
        for (let j = 0; j < n; j++) dst[i + j] = (dst[i + j] + data[from + j]) & 255
        i += n
      }
    }
    const scratch = new Uint8Array(256 << 10)
    let newPos = 0
    let oldPos = 0
    let first = true
    const ctls: Ctl[] = []
    for (;;) {
      const n = await this.b.uvarint(MAX_BLOCK_OPS, 'op count')
      if (n === 0) break
      this.opts.signal?.throwIfAborted()
      ctls.length = 0
      let np = newPos
      let op = oldPos
      let diffTotal = 0
      for (let k = 0; k < n; k++) {
        const d = await this.b.uvarint(size - np, 'diff length')
        const e = await this.b.uvarint(size - np - d, 'extra length')
        const s = await this.b.varint('seek')
        if (d + e === 0 && !first) throw corrupt('empty delta op')
        first = false
        if (d > oldSize - op) throw corrupt('delta reads past the base file')
        np += d + e
        op += d
        if (s < -op || s > oldSize - op) throw corrupt('delta seeks outside the base file')
        op += s
        diffTotal += d
        ctls.push({ diff: d, extra: e, seek: s })
      }
      // Pass 1: diff bytes, zero-run-length coded, added to the old bytes.
      let remaining = diffTotal
      let zeros = 0
      let lits = 0
      let wp = newPos
      let rp = oldPos
      for (const c of ctls) {
        for (let rem = c.diff; rem > 0; ) {
          const k = Math.min(rem, scratch.length)
          // Decode k diff bytes into scratch.
          let filled = 0
          while (filled < k) {
            if (zeros > 0) {
              const m = Math.min(k - filled, zeros)
              scratch.fill(0, filled, filled + m)
              filled += m
              zeros -= m
            } else if (lits > 0) {
              const m = Math.min(k - filled, lits)
              if (!(await this.b.exact(scratch, filled, m))) throw corrupt('reading diff bytes: unexpected EOF')
              filled += m
              lits -= m
            } else {
              const z = await this.b.uvarint(remaining, 'zero run')
              const l = await this.b.uvarint(remaining - z, 'literal run')
              if (z + l === 0) throw corrupt('empty diff run')
              zeros = z
              lits = l
              remaining -= z + l
            }
          }
          await addOld(scratch, k, rp)
          grow(wp + k)
          out.set(scratch.subarray(0, k), wp)
          rem -= k
          wp += k
          rp += k
        }
        wp += c.extra
        rp += c.seek
      }
      if (remaining !== 0 || zeros !== 0 || lits !== 0) throw corrupt('diff runs overrun the block')
      // Pass 2: extra bytes.
      wp = newPos
      for (const c of ctls) {
        wp += c.diff
        if (c.extra > 0) {
          let done = 0
          while (done < c.extra) {
            const chunk = await this.b.take(c.extra - done)
            if (chunk.length === 0) throw corrupt('reading extra bytes: unexpected EOF')
            grow(wp + done + chunk.length)
            out.set(chunk, wp + done)
            done += chunk.length
          }
          wp += c.extra
        }
      }
      newPos = np
      oldPos = op
    }
    if (newPos !== size) throw corrupt(`delta for ${p} makes ${newPos} bytes, its record says ${size}`)
    grow(size)
    return out.length === size ? out : out.subarray(0, size)
  }
}

function prefixIs(prefix: Uint8Array, id: Uint8Array): boolean {
  for (let i = 0; i < ID_PREFIX; i++) if (prefix[i] !== (id[i] ?? 0)) return false
  return true
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
