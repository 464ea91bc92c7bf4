// The canonical file list (release/filelist.go): the bytes whose SHA-256 the
// release key signs as files.sha256. The client rebuilds it byte for byte from
// what it installs and compares hashes, so every path, size, mode and file
// hash is covered by the CI signature.
import { CapstanError } from './errors.js'
import { fromHex, sha256, toHex, utf8, utf8d } from './bytes.js'

export const MAX_FILES = 100_000
export const MAX_PATH_LEN = 1024
export const FILE_LIST_MAGIC = 'capstan.files/v1\n'
const LINE_MAX = 64 + 1 + 20 + 1 + 4 + 1 + MAX_PATH_LEN + 1
export const MAX_FILE_LIST_BYTES = FILE_LIST_MAGIC.length + MAX_FILES * LINE_MAX

/** One file of a release. sha256 is 32 bytes; mode holds permission bits only. */
export interface FileEntry {
  path: string
  size: number
  mode: number
  sha256: Uint8Array
}

/** What a release document signs of its files (release.FileSet). */
export interface FileSet {
  count: number
  size: number
  sha256: string // 64 lowercase hex
}

/** maxListBytes bounds the encoded list of a file set (FileSet.MaxListBytes). */
export function maxListBytes(fs: FileSet): number {
  return FILE_LIST_MAGIC.length + Math.max(fs.count, 0) * LINE_MAX
}

/** validatePath mirrors release.ValidatePath; it returns a reason or null. */
export function validatePath(p: string): string | null {
  if (p === '') return 'empty file path'
  const bytes = utf8.encode(p).length
  if (bytes > MAX_PATH_LEN) return `file path of ${bytes} bytes is over the limit of ${MAX_PATH_LEN}`
  if (p.startsWith('/')) return `absolute file path ${JSON.stringify(p)}`
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i)
    if (c < 0x20 || c === 0x7f || c === 0x5c) return `file path ${JSON.stringify(p)} contains a backslash or a control character`
  }
  if (p.length >= 2 && p[1] === ':') return `file path ${JSON.stringify(p)} looks like a drive letter`
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') return `file path ${JSON.stringify(p)} has an empty, '.' or '..' segment`
  }
  return null
}

/** decodePath turns patch bytes into a path, refusing invalid UTF-8 (Go: utf8.ValidString). */
export function decodePath(b: Uint8Array): string | null {
  try {
    return utf8d.decode(b)
  } catch {
    return null
  }
}

/** comparePaths orders by the UTF-8 bytes of the paths, as Go compares strings. */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0
  const x = utf8.encode(a)
  const y = utf8.encode(b)
  const n = Math.min(x.length, y.length)
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i]
  return x.length - y.length
}

export function sortFiles(files: FileEntry[]): void {
  // Plain UTF-16 order equals UTF-8 byte order except around surrogates; take
  // the exact comparison only when a path leaves the BMP-safe range.
  const ascii = files.every((f) => /^[\x00-\ud7ff]*$/.test(f.path))
  files.sort(ascii ? (a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0) : (a, b) => comparePaths(a.path, b.path))
}

/** encodeFileList returns the canonical bytes of a sorted file list. */
export function encodeFileList(files: FileEntry[]): Uint8Array {
  let s = FILE_LIST_MAGIC
  for (const f of files) s += `${toHex(f.sha256)} ${f.size} ${f.mode.toString(8)} ${f.path}\n`
  return utf8.encode(s)
}

/** fileSetOf returns the FileSet of a sorted file list. */
export async function fileSetOf(files: FileEntry[]): Promise<FileSet> {
  let size = 0
  for (const f of files) size += f.size
  return { count: files.length, size, sha256: toHex(await sha256(encodeFileList(files))) }
}

export function sameFileSet(a: FileSet, b: FileSet): boolean {
  return a.count === b.count && a.size === b.size && a.sha256 === b.sha256
}

/** validateFiles mirrors Manifest.validateFiles: bounds, paths, order, no file that is also a folder. */
export function validateFiles(files: FileEntry[]): string | null {
  if (files.length > MAX_FILES) return `${files.length} files is more than the limit of ${MAX_FILES}`
  for (let i = 0; i < files.length; i++) {
    const f = files[i]
    const bad = validatePath(f.path)
    if (bad) return bad
    if (f.size < 0 || !Number.isSafeInteger(f.size)) return `file ${JSON.stringify(f.path)} has a bad size`
    if ((f.mode & ~0o777) !== 0) return `file ${JSON.stringify(f.path)} has mode ${f.mode.toString(8)} beyond permission bits`
    if (i > 0) {
      const c = comparePaths(files[i - 1].path, f.path)
      if (c === 0) return `duplicate file ${JSON.stringify(f.path)}`
      if (c > 0) return `files are not sorted at ${JSON.stringify(f.path)}`
    }
  }
  for (let i = 1; i < files.length; i++) {
    const prev = files[i - 1].path
    for (let j = i; j < files.length && files[j].path.startsWith(prev); j++) {
      if (files[j].path.startsWith(prev + '/')) return `${JSON.stringify(prev)} is both a file and a directory`
    }
  }
  return null
}

/**
 * decodeFileList parses canonical list bytes; like release.DecodeFileList it
 * accepts only the canonical form (it re-encodes and compares).
 */
export function decodeFileList(b: Uint8Array): FileEntry[] {
  const bad = (m: string) => new CapstanError('bad-manifest', `file list: ${m}`)
  if (b.length > MAX_FILE_LIST_BYTES) throw bad(`${b.length} bytes is over the limit`)
  let text: string
  try {
    text = utf8d.decode(b)
  } catch {
    throw bad('not UTF-8')
  }
  if (!text.startsWith(FILE_LIST_MAGIC)) throw bad(`does not start with ${JSON.stringify(FILE_LIST_MAGIC.trim())}`)
  const rest = text.slice(FILE_LIST_MAGIC.length)
  if (rest !== '' && !rest.endsWith('\n')) throw bad('does not end with a newline')
  const lines = rest === '' ? [] : rest.slice(0, -1).split('\n')
  if (lines.length > MAX_FILES) throw bad(`${lines.length} files is over the limit`)
  const files: FileEntry[] = []
  for (const line of lines) {
    const m = /^([0-9a-f]{64}) (0|[1-9][0-9]{0,18}) (0|[1-7][0-7]{0,10}) (.*)$/s.exec(line)
    if (!m) throw bad(`line ${JSON.stringify(line.slice(0, 80))} is not "<sha256> <size> <mode> <path>"`)
    const size = Number(m[2])
    if (!Number.isSafeInteger(size)) throw bad(`line ${JSON.stringify(line.slice(0, 80))}: bad size`)
    files.push({ sha256: fromHex(m[1])!, size, mode: parseInt(m[3], 8), path: m[4] })
  }
  const why = validateFiles(files)
  if (why) throw bad(why)
  const again = encodeFileList(files)
  if (again.length !== b.length || again.some((x, i) => x !== b[i])) throw bad('not in canonical form')
  return files
}
