// Frame decoding: a frame's compressed bytes come in length-prefixed chunks
// (delta/format.go chunkReader); zstd frames decode with fzstd, brotli frames
// with whatever brotli the platform has, stored frames are the records.
import { Decompress } from 'fzstd'
import { CapstanError } from './errors.js'
import { corrupt, Reader, Source } from './reader.js'

export const MAX_CHUNK = 1 << 20

/** chunks returns the Source of one frame's chunk payloads, ending at its zero-length terminator. */
export function chunkSource(raw: Reader): Source {
  let done = false
  return {
    async next() {
      if (done) return null
      for (;;) {
        const n = await raw.uvarint(Number.MAX_SAFE_INTEGER, 'chunk length')
        if (n > MAX_CHUNK) throw corrupt(`chunk of ${n} bytes`)
        if (n === 0) {
          done = true
          return null
        }
        const out = new Uint8Array(n)
        if (!(await raw.exact(out, 0, n))) throw corrupt('reading a chunk: unexpected EOF')
        return out
      }
    },
  }
}

/**
 * A BrotliDecoder decodes one brotli stream pushed in pieces. Platforms
 * without one (every WebView measured: DecompressionStream has no
 * "brotli") ask the edge for patches without brotli frames instead
 * (docs/decisions/131).
 */
export interface BrotliDecoder {
  push(chunk: Uint8Array): Promise<Uint8Array[]> | Uint8Array[]
  end(): Promise<Uint8Array[]> | Uint8Array[]
}
export type BrotliFactory = (maxOutput: number) => BrotliDecoder

/** streamBrotli returns a BrotliFactory over DecompressionStream("brotli") where the engine has it, else null. */
export function streamBrotli(): BrotliFactory | null {
  const DS = (globalThis as { DecompressionStream?: new (f: string) => TransformStream<Uint8Array, Uint8Array> }).DecompressionStream
  if (!DS) return null
  try {
    new DS('brotli')
  } catch {
    return null
  }
  return () => {
    const ds = new DS('brotli')
    const w = ds.writable.getWriter()
    const r = ds.readable.getReader()
    const out: Uint8Array[] = []
    const pump = (async () => {
      for (;;) {
        const { value, done } = await r.read()
        if (done) return
        out.push(value)
      }
    })()
    pump.catch(() => {})
    return {
      async push(c) {
        await w.write(c)
        return out.splice(0)
      },
      async end() {
        await w.close()
        await pump
        return out.splice(0)
      },
    }
  }
}

/**
 * ZstdSplitter cuts a zstd stream into units of at most one block (with the
 * frame header before it) and checks every frame header before fzstd sees
 * it: windows over maxWindow are refused (klauspost's WithDecoderMaxWindow
 * in the Go applier; fzstd itself would allocate whatever window a frame
 * names), and feeding fzstd one block at a time bounds what one push can
 * produce to 128 KiB, so a small patch cannot make a huge output at once.
 */
class ZstdSplitter {
  private state: 'magic' | 'header' | 'block' | 'body' | 'trailer' | 'skippable' = 'magic'
  private hdr: number[] = []
  private left = 0
  private checksum = false
  private lastBlock = false
  private unit: Uint8Array[] = []
  constructor(private maxWindow: number) {}

  feed(c: Uint8Array): Uint8Array[] {
    const units: Uint8Array[] = []
    let i = 0
    let from = 0
    const cut = () => {
      if (i > from) this.unit.push(c.subarray(from, i))
      from = i
      if (this.unit.length) {
        units.push(this.unit.length === 1 ? this.unit[0] : concatAll(this.unit))
        this.unit = []
      }
    }
    while (i < c.length) {
      switch (this.state) {
        case 'magic':
        case 'header':
          this.hdr.push(c[i++])
          this.header()
          break
        case 'block': {
          this.hdr.push(c[i++])
          if (this.hdr.length < 3) break
          const h = this.hdr[0] | (this.hdr[1] << 8) | (this.hdr[2] << 16)
          this.hdr = []
          const type = (h >> 1) & 3
          const size = h >>> 3
          if (type === 3) throw corrupt('zstd frame: reserved block type')
          if (size > 128 << 10) throw corrupt('zstd frame: block over 128 KiB')
          this.lastBlock = (h & 1) === 1
          this.left = type === 1 ? 1 : size
          this.state = 'body'
          if (this.left === 0) this.endBlock(cut)
          break
        }
        case 'body': {
          const k = Math.min(this.left, c.length - i)
          i += k
          this.left -= k
          if (this.left === 0) this.endBlock(cut)
          break
        }
        case 'trailer':
        case 'skippable': {
          const k = Math.min(this.left, c.length - i)
          i += k
          this.left -= k
          if (this.left === 0) {
            this.state = 'magic'
            cut()
          }
          break
        }
      }
    }
    if (i > from) this.unit.push(c.subarray(from, i))
    return units
  }

  private endBlock(cut: () => void): void {
    if (this.lastBlock && this.checksum) {
      this.state = 'trailer'
      this.left = 4
      return
    }
    this.state = this.lastBlock ? 'magic' : 'block'
    cut()
  }

  private header(): void {
    const h = this.hdr
    if (this.state === 'magic') {
      if (h.length < 4) return
      const magic = (h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)) >>> 0
      if ((magic & 0xfffffff0) >>> 0 === 0x184d2a50) {
        if (h.length < 8) return
        this.left = (h[4] | (h[5] << 8) | (h[6] << 16) | (h[7] << 24)) >>> 0
        this.hdr = []
        this.state = 'skippable'
        return
      }
      if (magic !== 0xfd2fb528) throw corrupt('zstd frame: bad magic')
      this.state = 'header'
      return
    }
    if (h.length < 5) return
    const fhd = h[4]
    const fcsFlag = fhd >> 6
    const single = (fhd >> 5) & 1
    const did = fhd & 3
    if (fhd & 8) throw corrupt('zstd frame: reserved bit set')
    this.checksum = ((fhd >> 2) & 1) === 1
    const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag
    const hdrLen = 5 + (single ? 0 : 1) + (did === 3 ? 4 : did) + fcsBytes
    if (h.length < hdrLen) return
    let window: number
    if (!single) {
      const wd = h[5]
      const base = 2 ** (10 + (wd >> 3))
      window = base + (base / 8) * (wd & 7)
    } else {
      let fcs = 0
      for (let k = fcsBytes - 1; k >= 0; k--) fcs = fcs * 256 + h[hdrLen - fcsBytes + k]
      if (fcsBytes === 2) fcs += 256
      window = fcs
    }
    if (did !== 0) throw new CapstanError('unsupported', 'delta: zstd frame needs a dictionary')
    if (window > this.maxWindow) throw new CapstanError('too-large', `delta: zstd window of ${window} bytes, limit ${this.maxWindow}`)
    this.hdr = []
    this.state = 'block'
  }

  /** complete reports whether the stream ended at a frame boundary. */
  complete(): boolean {
    return this.state === 'magic' && this.hdr.length === 0 && this.unit.length === 0
  }
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}

/**
 * decodedSource returns the Source of a frame's records: its chunks run
 * through the frame's codec. For zstd, the stream must end exactly at a frame
 * boundary, as the Go decoder requires.
 */
export function decodedSource(codec: number, chunks: Source, maxWindow: number, brotli: BrotliFactory | null, maxOutput: number): Source {
  if (codec === 3) return chunks
  if (codec === 1) {
    const split = new ZstdSplitter(maxWindow)
    const out: Uint8Array[] = []
    const units: Uint8Array[] = []
    const z = new Decompress((d) => {
      if (d.length) out.push(d)
    })
    let ended = false
    return {
      async next() {
        for (;;) {
          if (out.length) return out.shift()!
          try {
            if (units.length) {
              z.push(units.shift()!, false)
              continue
            }
            if (ended) return null
            const c = await chunks.next()
            if (c === null) {
              ended = true
              if (!split.complete()) throw corrupt('zstd frame: truncated')
              z.push(new Uint8Array(0), true)
            } else {
              units.push(...split.feed(c))
            }
          } catch (e) {
            if (e instanceof CapstanError) throw e
            throw corrupt(`zstd frame: ${e instanceof Error ? e.message : e}`)
          }
        }
      },
    }
  }
  if (codec === 2) {
    if (!brotli) throw new CapstanError('unsupported', 'delta: brotli frame, and this platform has no brotli decoder')
    const d = brotli(maxOutput)
    const out: Uint8Array[] = []
    let ended = false
    return {
      async next() {
        for (;;) {
          if (out.length) return out.shift()!
          if (ended) return null
          const c = await chunks.next()
          try {
            if (c === null) {
              ended = true
              out.push(...(await d.end()))
            } else {
              out.push(...(await d.push(c)))
            }
          } catch (e) {
            if (e instanceof CapstanError) throw e
            throw corrupt(`brotli frame: ${e instanceof Error ? e.message : e}`)
          }
          while (out.length && out[0].length === 0) out.shift()
        }
      },
    }
  }
  throw new CapstanError('unsupported', `delta: unsupported patch format: frame codec ${codec}`)
}
