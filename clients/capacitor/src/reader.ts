// Byte sources for the patch applier: a buffered reader over chunks that
// arrive asynchronously (the network, a decompressor), with the varint and
// exact-length reads the format needs. Hot paths stay synchronous while
// bytes are buffered; only an empty buffer awaits.
import { CapstanError } from './errors.js'

/** A Source hands out chunks of bytes in order; null means the end. */
export interface Source {
  next(): Promise<Uint8Array | null>
}

const EMPTY = new Uint8Array(0)

/** fromStream adapts a ReadableStream or an async iterable of chunks. */
export function sourceOf(input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array): Source {
  if (input instanceof Uint8Array) {
    let done = false
    return {
      async next() {
        if (done) return null
        done = true
        return input
      },
    }
  }
  if (typeof (input as ReadableStream<Uint8Array>).getReader === 'function') {
    const r = (input as ReadableStream<Uint8Array>).getReader()
    return {
      async next() {
        const { value, done } = await r.read()
        return done ? null : value
      },
    }
  }
  const it = (input as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
  return {
    async next() {
      const { value, done } = await it.next()
      return done ? null : value
    },
  }
}

export const corrupt = (m: string) => new CapstanError('corrupt', `delta: corrupt patch: ${m}`)

/** Reader buffers a Source and counts the bytes it consumed. */
export class Reader {
  private buf: Uint8Array = EMPTY
  private pos = 0
  private eof = false
  /** bytes consumed so far */
  n = 0
  constructor(private src: Source) {}

  /** fill makes at least one byte available; false at the end. */
  async fill(): Promise<boolean> {
    while (this.pos >= this.buf.length) {
      if (this.eof) return false
      const c = await this.src.next()
      if (c === null) {
        this.eof = true
        return false
      }
      this.buf = c
      this.pos = 0
    }
    return true
  }

  /** byte returns the next byte, or -1 at the end. */
  async byte(): Promise<number> {
    if (this.pos >= this.buf.length && !(await this.fill())) return -1
    this.n++
    return this.buf[this.pos++]
  }

  /**
   * uvarint reads an unsigned LEB128 value as encoding/binary does (at most
   * 10 bytes, no overflow past 64 bits) and checks it against limit. Values
   * are JS numbers: every bound the format has is far below 2^53.
   */
  async uvarint(limit: number, what: string): Promise<number> {
    let x = 0
    let mul = 1
    for (let i = 0; ; i++) {
      let b: number
      if (this.pos < this.buf.length) {
        b = this.buf[this.pos++]
        this.n++
      } else {
        b = await this.byte()
        if (b < 0) throw corrupt(`reading ${what}: ${i === 0 ? 'unexpected EOF' : 'unexpected EOF'}`)
      }
      if (i === 9 && b > 1) throw corrupt(`reading ${what}: varint overflows a 64-bit integer`)
      if (b < 0x80) {
        x += b * mul
        if (x > limit) throw corrupt(`${what} ${x} is over the bound ${limit}`)
        return x
      }
      x += (b & 0x7f) * mul
      mul *= 128
      if (i === 9) throw corrupt(`reading ${what}: varint overflows a 64-bit integer`)
    }
  }

  /** varint reads a zig-zag signed varint (encoding/binary.ReadVarint). */
  async varint(what: string): Promise<number> {
    // Read as unsigned without a bound, then unzig. Seeks are bounded by the caller.
    const u = await this.uvarint(Number.MAX_VALUE, what)
    // u is exact only below 2^53; larger seeks are out of any base file anyway.
    const half = Math.floor(u / 2)
    return u % 2 === 0 ? half : -half - 1
  }

  /** exact reads exactly n bytes into dst[off:off+n]; false when the source ends first. */
  async exact(dst: Uint8Array, off: number, n: number): Promise<boolean> {
    while (n > 0) {
      if (this.pos >= this.buf.length && !(await this.fill())) return false
      const k = Math.min(n, this.buf.length - this.pos)
      dst.set(this.buf.subarray(this.pos, this.pos + k), off)
      this.pos += k
      this.n += k
      off += k
      n -= k
    }
    return true
  }

  /** take returns up to max bytes without copying (a view of the buffer); empty at the end. */
  async take(max: number): Promise<Uint8Array> {
    if (this.pos >= this.buf.length && !(await this.fill())) return EMPTY
    const k = Math.min(max, this.buf.length - this.pos)
    const out = this.buf.subarray(this.pos, this.pos + k)
    this.pos += k
    this.n += k
    return out
  }

  /** atEnd reports whether the source has no more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill())
  }
}
