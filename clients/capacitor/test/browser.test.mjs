// The built client in headless Chromium (Debian's chromium, never a
// downloaded browser), against a real `capstan dev`: the page runs
// dist/capstan.min.js with the browser's own WebCrypto, fetch and IndexedDB,
// from another origin than the edge (as a WebView page is), and installs,
// confirms and patches a release like a phone; the trees match the Go
// device's. It also times the vite-vue patch applied in the page.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import { createServer } from 'node:http'
import * as path from 'node:path'
import { chromium } from 'playwright-core'
import { fixtures, goDevice, here, startDev, tempDir, treeFiles, upload } from './helpers.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'

/** serve answers the page's own files from another origin than the edge's. */
async function servePage() {
  const files = {
    '/index.html': [path.join(here, 'browser/index.html'), 'text/html'],
    '/page.js': [path.join(here, 'browser/page.js'), 'text/javascript'],
    '/capstan.min.js': [path.join(here, '../dist/capstan.min.js'), 'text/javascript'],
  }
  const srv = createServer(async (req, res) => {
    const f = files[req.url]
    if (!f) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': f[1] }).end(await fs.readFile(f[0]))
  })
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((r) => srv.close(r)) }
}

async function goTree(dir) {
  const out = {}
  for (const f of await treeFiles(dir)) out[f] = createHash('sha256').update(await fs.readFile(path.join(dir, f))).digest('hex')
  return out
}

test('the client bundle updates a page in headless Chromium', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}`, timeout: 300_000 }, async (t) => {
  const dev = await startDev()
  t.after(() => dev.stop())
  const page0 = await servePage()
  t.after(() => page0.close())
  const work = await tempDir()
  t.after(() => fs.rm(work, { recursive: true, force: true }))
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  t.after(() => browser.close())
  const ctx = await browser.newContext() // a fresh profile: empty IndexedDB
  const page = await ctx.newPage()
  const logs = []
  page.on('console', (m) => logs.push(m.text()))
  page.on('pageerror', (e) => logs.push(String(e)))
  await page.goto(page0.url + '/index.html')
  await page.waitForFunction(() => window.capstanReady === true, null, { timeout: 30_000 })

  const app = 'com.capstan.browser'
  const cfg = { app, channel: 'production', edges: [dev.edge], keys: dev.trustPem }
  const step = (op, arg) => page.evaluate(([cfg, op, arg]) => window.capstanTest.step(cfg, op, arg), [cfg, op, arg])
  const goDir = path.join(work, 'go')
  const a = await upload(dev, app, '1.0.0', path.join(fixtures, 'vite-vue/a.zip'))

  // First install: the full stream, verified with the page's WebCrypto.
  let s = await step('update')
  assert.equal(s.res.status, 'updated', JSON.stringify(s) + logs.join('\n'))
  assert.equal(s.res.mode, 'full')
  const firstInstall = s.res.bytes
  assert.equal(s.verifier, 'webcrypto')
  assert.equal((await step('start')).res.status, 'pending')
  s = await step('confirm')
  assert.equal(s.res.status, 'confirmed')
  assert.equal(s.persisted, s.served)
  const g1 = await goDevice(dev, app, goDir)
  assert.deepEqual(await page.evaluate(() => window.capstanTest.tree()), await goTree(path.join(goDir, 'current')))

  // The update is a patch: Chromium has no brotli decoder, so the zstd variant.
  const b = await upload(dev, app, '1.0.1', path.join(fixtures, 'vite-vue/b.zip'))
  s = await step('update')
  assert.equal(s.res.status, 'updated', JSON.stringify(s) + logs.join('\n'))
  assert.equal(s.res.mode, 'delta')
  const g2 = await goDevice(dev, app, goDir)
  assert.deepEqual(await page.evaluate(() => window.capstanTest.tree()), await goTree(path.join(goDir, 'current')))
  const zstdPatch = (await (await fetch(`${dev.edge}/v1/patches/${a}/${b}?codecs=zstd`)).arrayBuffer()).byteLength
  const plainPatch = (await (await fetch(`${dev.edge}/v1/patches/${a}/${b}`)).arrayBuffer()).byteLength
  // What the page downloaded is the Go device's download with the zstd
  // variant in place of the default patch, and a gzip answer in place of a
  // brotli one (Chromium asks for brotli on HTTPS only).
  const answerExtra = s.res.bytes - zstdPatch - (g2.bytes - plainPatch)
  assert.ok(answerExtra >= 0 && answerExtra < 200, `page ${s.res.bytes} B, Go device ${g2.bytes} B, patches ${zstdPatch}/${plainPatch} B`)
  const s0bytes = s.res.bytes
  t.diagnostic(`update bytes: page ${s.res.bytes}, Go device ${g2.bytes} (patch ${zstdPatch} vs ${plainPatch}); first install: page ${firstInstall}, Go device ${g1.bytes}`)

  // The new bundle crashes before confirming: the next start reverts it.
  await page.evaluate(() => window.capstanTest.restart())
  s = await step('start')
  assert.equal(s.res.status, 'reverted')
  assert.deepEqual(s.failed, [b])

  // The budget: the vite-vue patch applied in the page (memory and IndexedDB).
  const doc = JSON.parse(await (await fetch(`${dev.edge}/v1/releases/${b}`)).text()).signed
  const { times, patchBytes } = await page.evaluate(([e, a, b, d]) => window.capstanTest.applyTimes(e, a, b, d, 7), [dev.edge, a, b, doc])
  const med = (x) => x.slice(2).sort((p, q) => p - q)[Math.floor((x.length - 2) / 2)]
  const result = { update_bytes_page: s0bytes, update_bytes_go: g2.bytes, patch_bytes: patchBytes, apply_ms_memory: +med(times.memory).toFixed(1), apply_ms_indexeddb: +med(times.indexeddb).toFixed(1) }
  t.diagnostic('vite-vue patch in Chromium: ' + JSON.stringify(result))
  if (process.env.CAPSTAN_BENCH_OUT) await fs.writeFile(process.env.CAPSTAN_BENCH_OUT, JSON.stringify(result) + '\n')
})
