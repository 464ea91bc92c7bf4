// Test helpers: a real `capstan dev` on free ports, the capstan CLI, the
// fixture pairs, and the Node bindings of the client's folder interfaces
// (a temp folder stands in for the app's data folder).
import { execFile, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { promisify } from 'node:util'
import * as zlib from 'node:zlib'
import { fileURLToPath } from 'node:url'

const run = promisify(execFile)
export const here = path.dirname(fileURLToPath(import.meta.url))
export const repo = path.resolve(here, '../../..')
export const bin = process.env.CAPSTAN_BIN || path.join(repo, 'bin/capstan')
export const fixtures = process.env.CAPSTAN_FIXTURES || path.resolve(repo, '../shared/fixtures')

/** ensureBinary builds bin/capstan when it is missing (make test builds it first). */
export async function ensureBinary() {
  if (!existsSync(bin)) await run('go', ['build', '-o', bin, './cmd/capstan'], { cwd: repo })
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

export async function tempDir(prefix = 'capstan-ts-') {
  return fs.mkdtemp(path.join(tmpdir(), prefix))
}

/**
 * startDev runs `capstan dev` with its data in a temp folder, on free ports
 * (several may run at once on one machine), and waits until the edge
 * answers. stop() ends it and removes the folder.
 */
export async function startDev() {
  await ensureBinary()
  const dir = await tempDir('capstan-dev-')
  // An admin key needs at least 32 characters (128 bits in hex).
  const key = 'test-admin-key-' + randomBytes(16).toString('hex')
  const [api, edge, gossip] = [await freePort(), await freePort(), await freePort()]
  const proc = spawn(bin, ['dev', '--data', path.join(dir, 'data'), '--api', `127.0.0.1:${api}`, '--edge', `127.0.0.1:${edge}`, '--gossip', `127.0.0.1:${gossip}`], {
    env: { ...process.env, CAPSTAN_ADMIN_KEY: key },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  proc.stdout.on('data', (d) => (out += d))
  proc.stderr.on('data', (d) => (out += d))
  const dev = {
    dir,
    key,
    api: `http://127.0.0.1:${api}`,
    edge: `http://127.0.0.1:${edge}`,
    output: () => out,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM')
        await new Promise((r) => proc.once('exit', r))
      }
      await fs.rm(dir, { recursive: true, force: true })
    },
    /** cli runs a capstan command against this origin. */
    async cli(...args) {
      const { stdout } = await run(bin, args, { env: { ...process.env, CAPSTAN_SERVER: dev.api, CAPSTAN_API_KEY: key }, cwd: dir, maxBuffer: 64 << 20 })
      return stdout
    },
  }
  const deadline = Date.now() + 60_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error('capstan dev exited:\n' + out)
    try {
      const r = await fetch(dev.edge + '/healthz')
      if (r.ok && existsSync(path.join(dir, 'data/origin/origin.key.pub'))) break
    } catch {}
    if (Date.now() > deadline) throw new Error('capstan dev did not start:\n' + out)
    await new Promise((r) => setTimeout(r, 100))
  }
  await dev.cli('keys', 'gen', '--out', path.join(dir, 'release.key'))
  dev.signKey = path.join(dir, 'release.key')
  const pem = (await fs.readFile(path.join(dir, 'release.key.pub'), 'utf8')) + (await fs.readFile(path.join(dir, 'data/origin/origin.key.pub'), 'utf8'))
  dev.trustPem = pem
  dev.trustFile = path.join(dir, 'trust.pem')
  await fs.writeFile(dev.trustFile, pem)
  return dev
}

/** upload ships a zip as a signed release and points channel at it; it returns the release id. */
export async function upload(dev, app, version, zip, channel = 'production', signKey = dev.signKey) {
  const out = await dev.cli('upload', '--app', app, '--version', version, '--channel', channel, '--sign-key', signKey, '--json', zip)
  const j = JSON.parse(out)
  return j.id ?? j.release?.id ?? j.release
}

/** goDevice runs the reference device once and returns its JSON result. */
export async function goDevice(dev, app, dir, ...extra) {
  const { stdout } = await run(bin, ['device', '--edge', dev.edge, '--no-rank', '--app', app, '--channel', 'production', '--dir', dir, '--public-key', dev.trustFile, '--json', ...extra], { maxBuffer: 16 << 20 })
  return JSON.parse(stdout)
}

/**
 * fixturePairs finds every folder of the fixtures with two or more zips and
 * pairs them in version order, consecutively (the rule of
 * scripts/bench-delta.sh).
 */
export function fixtureSeries() {
  const out = []
  for (const name of readdirSync(fixtures).sort()) {
    const d = path.join(fixtures, name)
    let zips
    try {
      zips = readdirSync(d).filter((f) => f.endsWith('.zip'))
    } catch {
      continue
    }
    if (zips.length < 2) continue
    zips.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
    out.push({ name, zips: zips.map((z) => path.join(d, z)) })
  }
  return out
}

/** treeFiles lists every regular file under dir, relative, sorted. */
export async function treeFiles(dir) {
  const out = []
  async function walk(rel) {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? rel + '/' + e.name : e.name
      if (e.isDirectory()) await walk(r)
      else out.push(r)
    }
  }
  await walk('')
  return out.sort()
}

/** nodeBrotli is the Node binding of the client's brotli decoder (zlib). */
export function nodeBrotli(maxOutput) {
  const parts = []
  return {
    push(c) {
      parts.push(c)
      return []
    },
    end() {
      const out = zlib.brotliDecompressSync(Buffer.concat(parts), { maxOutputLength: Math.min(maxOutput, 2 ** 31 - 1) })
      return [new Uint8Array(out.buffer, out.byteOffset, out.length)]
    },
  }
}

const SAFE = /^[^\0]+$/

/**
 * NodeFolder is a release folder on disk: writes create new files only
 * (O_EXCL), inside the folder, through folders that are real folders (no
 * symlink followed).
 */
export class NodeFolder {
  constructor(root) {
    this.root = root
  }
  async resolve(p) {
    if (!SAFE.test(p) || p.startsWith('/') || p.split('/').some((s) => s === '' || s === '.' || s === '..')) throw new Error(`unsafe path ${p}`)
    const segs = p.split('/')
    let d = this.root
    for (const s of segs.slice(0, -1)) {
      d = path.join(d, s)
      try {
        await fs.mkdir(d)
      } catch (e) {
        if (e.code !== 'EEXIST') throw e
      }
      const st = await fs.lstat(d)
      if (!st.isDirectory()) throw new Error(`${d} is not a folder`)
    }
    return path.join(d, segs[segs.length - 1])
  }
  async write(p, data, mode) {
    const f = await this.resolve(p)
    await fs.writeFile(f, data, { flag: 'wx', mode: 0o600 })
    await fs.chmod(f, mode)
  }
  async read(p) {
    const f = await this.resolve(p)
    const b = await fs.readFile(f)
    return new Uint8Array(b.buffer, b.byteOffset, b.length)
  }
}

/**
 * nodePlatform binds the client to a temp folder: Files under root/files,
 * Storage as one JSON file, and a WebView that records what it serves and
 * what it persisted. restart() is the app starting again: the WebView
 * serves what was persisted.
 */
export function nodePlatform(root, extra = {}) {
  mkdirSync(root, { recursive: true })
  const files = new NodeFolder(path.join(root, 'files'))
  const statePath = path.join(root, 'storage.json')
  const web = { served: '', persisted: '', reloads: 0 }
  return {
    web,
    restart() {
      web.served = web.persisted
    },
    brotli: nodeBrotli,
    // What a WebView sends over HTTPS (Node's fetch alone asks for gzip and
    // deflate only); Node decodes brotli answers like a WebView does.
    fetch: (url, init = {}) => fetch(url, { ...init, headers: { ...init.headers, 'accept-encoding': 'gzip, deflate, br' } }),
    ...extra,
    files: {
      write: async (p, data, mode) => {
        await fs.mkdir(files.root, { recursive: true })
        return files.write(p, data, mode)
      },
      read: (p) => files.read(p),
      async remove(p) {
        await fs.rm(path.join(files.root, p), { recursive: true, force: true })
      },
      async list(p) {
        try {
          return await fs.readdir(path.join(files.root, p))
        } catch {
          return []
        }
      },
      serverPath: async (folder) => path.join(files.root, folder),
    },
    storage: {
      async get(k) {
        try {
          return JSON.parse(await fs.readFile(statePath, 'utf8'))[k] ?? null
        } catch {
          return null
        }
      },
      async set(k, v) {
        let all = {}
        try {
          all = JSON.parse(await fs.readFile(statePath, 'utf8'))
        } catch {}
        all[k] = v
        await fs.writeFile(statePath, JSON.stringify(all))
      },
    },
    webView: {
      getServerBasePath: async () => web.served,
      setServerBasePath: async (p) => {
        web.served = p
        web.reloads++
      },
      persistServerBasePath: async () => {
        web.persisted = web.served
      },
    },
  }
}
