// Applier benchmark (decision 130): the vite-vue patch applied by the
// TypeScript applier and by the Go applier compiled to WebAssembly, both in
// this Node, against the same files; and both appliers' sizes.
//   node bench/applier.mjs          (needs go, bin/capstan and the fixtures)
import { execFile } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { applyPatch, decodeFileList, fromHex } from '../dist/index.js'
import { fixtures, goDevice, NodeFolder, nodeBrotli, repo, startDev, tempDir, upload } from '../test/helpers.mjs'

const run = promisify(execFile)
const dev = await startDev()
const work = await tempDir()
try {
  const app = 'com.capstan.bench'
  const a = await upload(dev, app, '1.0.0', path.join(fixtures, 'vite-vue/a.zip'))
  const goDir = path.join(work, 'go')
  await goDevice(dev, app, goDir)
  const baseDir = path.join(work, 'base')
  await fs.cp(path.join(goDir, 'current'), baseDir, { recursive: true })
  const b = await upload(dev, app, '1.0.1', path.join(fixtures, 'vite-vue/b.zip'))
  const get = async (u) => new Uint8Array(await (await fetch(dev.edge + u)).arrayBuffer())
  const doc = (id) => get(`/v1/releases/${id}`).then((x) => JSON.parse(new TextDecoder().decode(x)).signed)
  const [da, db] = [await doc(a), await doc(b)]
  const list = await get(`/v1/blobs/${da.files.sha256}`)
  const patch = await get(`/v1/patches/${a}/${b}`)
  await fs.writeFile(path.join(work, 'patch'), patch)
  await fs.writeFile(path.join(work, 'list'), list)
  const base = { id: fromHex(a), files: decodeFileList(list), dir: new NodeFolder(baseDir) }
  const ts = []
  for (let i = 0; i < 7; i++) {
    const out = path.join(work, 'ts' + i)
    await fs.mkdir(out)
    const t0 = performance.now()
    await applyPatch(patch, base, { id: fromHex(b), files: db.files }, new NodeFolder(out), { brotli: nodeBrotli })
    ts.push(performance.now() - t0)
  }
  const wasm = path.join(work, 'apply.wasm')
  await run('go', ['build', '-ldflags=-s -w', '-o', wasm, './clients/capacitor/bench/wasmapply'], { cwd: repo, env: { ...process.env, GOOS: 'js', GOARCH: 'wasm' } })
  const goroot = (await run('go', ['env', 'GOROOT'])).stdout.trim()
  const { stdout } = await run('node', [path.join(goroot, 'lib/wasm/wasm_exec_node.js'), wasm, path.join(work, 'patch'), baseDir, path.join(work, 'list'), b, String(db.files.count), String(db.files.size), db.files.sha256, path.join(work, 'wasm'), a])
  const wasmTimes = stdout.trim().split('\n').map((l) => {
    const m = /apply ([\d.]+)(ms|µs|s) (.*)/.exec(l)
    if (!m || m[3] !== '<nil>') throw new Error('wasm apply: ' + l)
    return Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'µs' ? 0.001 : 1)
  })
  const wb = await fs.readFile(wasm)
  const min = await fs.readFile(new URL('../dist/capstan.min.js', import.meta.url))
  const med = (x) => x.slice().sort((p, q) => p - q)[Math.floor(x.length / 2)]
  console.log(JSON.stringify({
    patch_bytes: patch.length,
    ts_apply_ms_median: +med(ts.slice(2)).toFixed(1),
    wasm_apply_ms_median: +med(wasmTimes.slice(1)).toFixed(1),
    ts_bundle_gzip: gzipSync(min, { level: 9 }).length,
    wasm_gzip: gzipSync(wb, { level: 9 }).length,
  }))
} finally {
  await dev.stop()
  await fs.rm(work, { recursive: true, force: true })
}
