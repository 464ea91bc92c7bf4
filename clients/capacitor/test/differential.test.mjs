// Differential test of the TypeScript applier against the Go applier, on
// every fixture pair: each release is uploaded through a real `capstan dev`
// and installed by the Go reference device (`capstan device`); every patch
// the origin builds for the pair (both variants) and every full stream is
// then applied by the TypeScript applier, and the trees must be equal byte
// for byte, modes included. Then random, mutated and truncated patches must
// fail with CapstanError only, writing nothing outside their release folder.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { applyPatch, CapstanError, decodeFileList, fromHex } from '../dist/index.js'
import { fixtureSeries, goDevice, NodeFolder, nodeBrotli, startDev, tempDir, treeFiles, upload } from './helpers.mjs'

const ZERO = '0'.repeat(64)

async function getBytes(url) {
  const r = await fetch(url)
  assert.equal(r.status, 200, `${url}: ${r.status} ${await r.clone().text()}`)
  return new Uint8Array(await r.arrayBuffer())
}

/** releaseDoc returns the signed release document the edge serves for id. */
async function releaseDoc(dev, id) {
  const env = JSON.parse(new TextDecoder().decode(await getBytes(`${dev.edge}/v1/releases/${id}`)))
  return env.signed
}

async function sameTrees(a, b) {
  const fa = await treeFiles(a)
  assert.deepEqual(fa, await treeFiles(b), 'same paths')
  for (const f of fa) {
    const [x, y] = [await fs.readFile(path.join(a, f)), await fs.readFile(path.join(b, f))]
    assert.ok(x.equals(y), `${f}: same bytes`)
    const [sx, sy] = [await fs.stat(path.join(a, f)), await fs.stat(path.join(b, f))]
    assert.equal(sx.mode & 0o777, sy.mode & 0o777, `${f}: same mode`)
  }
}

async function tsApply(patch, base, target, dir, brotli = nodeBrotli) {
  await fs.mkdir(dir, { recursive: true })
  return applyPatch(patch, base, target, new NodeFolder(dir), { brotli })
}

test('the TypeScript applier makes what the Go applier makes, on every fixture pair', { timeout: 600_000 }, async (t) => {
  const series = fixtureSeries()
  assert.ok(series.length >= 3, `fixture pairs found: ${series.map((s) => s.name)}`)
  const dev = await startDev()
  t.after(() => dev.stop())
  const work = await tempDir()
  t.after(() => fs.rm(work, { recursive: true, force: true }))
  const samples = []
  for (const s of series) {
    const app = 'com.capstan.diff.' + s.name.replace(/[^a-zA-Z0-9]/g, '')
    const goDir = path.join(work, s.name, 'go-device')
    const rel = []
    for (const [i, zip] of s.zips.entries()) {
      const id = await upload(dev, app, `1.0.${i}`, zip)
      const res = await goDevice(dev, app, goDir)
      assert.equal(res.status, 'updated', JSON.stringify(res))
      const tree = path.join(work, s.name, `go-${i}`)
      await fs.cp(path.join(goDir, 'current'), tree, { recursive: true })
      const doc = await releaseDoc(dev, id)
      const files = decodeFileList(await getBytes(`${dev.edge}/v1/blobs/${doc.files.sha256}`))
      rel.push({ id, doc, tree, files, zip })
    }
    for (const [i, r] of rel.entries()) {
      const target = { id: fromHex(r.id), files: r.doc.files }
      await t.test(`${s.name} full stream ${i}`, async () => {
        const patch = await getBytes(`${dev.edge}/v1/patches/${ZERO}/${r.id}`)
        const dir = path.join(work, s.name, `full-${i}`)
        const { files } = await tsApply(patch, { id: new Uint8Array(32), files: [], dir: null }, target, dir, null)
        assert.equal(files.length, r.doc.files.count)
        await sameTrees(dir, r.tree)
      })
      if (i === 0) continue
      const b = rel[i - 1]
      const base = { id: fromHex(b.id), files: b.files, dir: new NodeFolder(b.tree) }
      await t.test(`${s.name} ${path.basename(b.zip)} → ${path.basename(r.zip)}`, async () => {
        const patch = await getBytes(`${dev.edge}/v1/patches/${b.id}/${r.id}`)
        const dir = path.join(work, s.name, `patch-${i}`)
        const { stats } = await tsApply(patch, base, target, dir)
        assert.equal(stats.patchBytes, patch.length)
        await sameTrees(dir, r.tree)
        samples.push({ name: `${s.name}-${i}`, patch, base, target })
      })
      await t.test(`${s.name} ${path.basename(b.zip)} → ${path.basename(r.zip)}, ?codecs=zstd, no brotli decoder`, async () => {
        const patch = await getBytes(`${dev.edge}/v1/patches/${b.id}/${r.id}?codecs=zstd`)
        const dir = path.join(work, s.name, `zstd-${i}`)
        await tsApply(patch, base, target, dir, null)
        await sameTrees(dir, r.tree)
      })
    }
  }
  // The default variant has brotli frames where they pay: without a brotli
  // decoder it is refused as unsupported, never misread.
  const withBrotli = samples.find((s) => s.name.startsWith('vite-vue'))
  await assert.rejects(tsApply(withBrotli.patch, withBrotli.base, withBrotli.target, path.join(work, 'nobrotli'), null), (e) => e instanceof CapstanError && e.code === 'unsupported')

  await t.test('random, mutated and truncated patches fail with CapstanError and write only inside their folder', async () => {
    let seed = 12345
    const rnd = (n) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed % n
    }
    const parent = path.join(work, 'fuzz')
    await fs.mkdir(parent)
    let n = 0
    let rejected = 0
    const attempt = async (bytes, s) => {
      const dir = path.join(parent, String(n++), 'release')
      try {
        await tsApply(bytes, s.base, s.target, dir)
      } catch (e) {
        assert.ok(e instanceof CapstanError, `threw ${e?.name}: ${e?.message}`)
        rejected++
      }
    }
    for (const s of samples) {
      const p = s.patch
      for (let k = 0; k <= 30; k++) await attempt(p.subarray(0, k), s)
      for (let k = 0; k < 25; k++) await attempt(p.subarray(0, 31 + rnd(p.length - 31)), s)
      for (let k = 0; k < 40; k++) {
        const m = p.slice()
        for (let j = 1 + rnd(3); j > 0; j--) m[rnd(m.length)] ^= 1 + rnd(255)
        await attempt(m, s)
      }
      for (let k = 0; k < 10; k++) {
        const m = new Uint8Array(26 + rnd(4096))
        for (let j = 0; j < m.length; j++) m[j] = rnd(256)
        if (k % 2) m.set(p.subarray(0, 26))
        await attempt(m, s)
      }
    }
    assert.ok(rejected > n * 0.9, `${rejected} of ${n} damaged patches rejected`)
    // Nothing outside the release folders: each attempt's folder holds only "release".
    for (const d of await fs.readdir(parent)) assert.deepEqual(await fs.readdir(path.join(parent, d)), ['release'])
  })
})
