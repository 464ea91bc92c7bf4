// The client's budgets (make bench-capacitor; docs/benchmarks.md):
//   1. size: the client and its Capacitor binding, minified and gzipped;
//   2. bytes: for every fixture pair, what the client downloads for the
//      update (check answer + patch) against `capstan device --json`'s
//      "bytes" for the same pair, with a brotli decoder (the default patch)
//      and without one (a WebView: the ?codecs=zstd variant);
//   3. speed: the vite-vue patch applied in headless Chromium (the browser
//      test's measure), in memory and into IndexedDB.
import { execFile } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { Capstan } from '../dist/index.js'
import { fixtureSeries, goDevice, here, nodePlatform, startDev, tempDir, upload } from '../test/helpers.mjs'

const run = promisify(execFile)
const size = JSON.parse(await fs.readFile(path.join(here, '../dist/size.json')))
const work = await tempDir()
const dev = await startDev()
const rows = []
try {
  for (const s of fixtureSeries()) {
    const app = 'com.capstan.budget.' + s.name.replace(/[^a-zA-Z0-9]/g, '')
    const clients = {}
    for (const kind of ['brotli', 'webview']) {
      const plat = nodePlatform(path.join(work, s.name, kind), kind === 'webview' ? { brotli: null } : {})
      clients[kind] = { plat, open: () => Capstan.open({ app, channel: 'production', edges: [dev.edge], keys: dev.trustPem, platform: plat }) }
    }
    for (const [i, zip] of s.zips.entries()) {
      await upload(dev, app, `1.0.${i}`, zip)
      const g = await goDevice(dev, app, path.join(work, s.name, 'go'))
      const row = { pair: i ? `${s.name} ${path.basename(s.zips[i - 1])} → ${path.basename(zip)}` : null, go: g.bytes }
      for (const [kind, c] of Object.entries(clients)) {
        c.plat.restart()
        const cl = await c.open()
        await cl.start()
        const r = await cl.update()
        if (r.status !== 'updated') throw new Error(`${kind}: ${JSON.stringify(r)}`)
        row[kind] = r.bytes
        row[kind + '_mode'] = r.mode
        await (await c.open()).confirm()
      }
      if (row.pair) rows.push(row)
    }
  }
} finally {
  await dev.stop()
}
const out = path.join(work, 'browser.json')
await run('node', ['--test', path.join(here, '../test/browser.test.mjs')], { env: { ...process.env, CAPSTAN_BENCH_OUT: out } })
const browser = JSON.parse(await fs.readFile(out, 'utf8'))
await fs.rm(work, { recursive: true, force: true })

console.log(`| budget | measured |\n|---|---|`)
console.log(`| client + Capacitor binding, min+gzip (< 30 KB) | ${size.gzip.toLocaleString('en')} B (${size.minified.toLocaleString('en')} B minified) |`)
console.log(`| vite-vue patch applied in headless Chromium (< 50 ms), median of 5 | ${browser.apply_ms_memory} ms in memory, ${browser.apply_ms_indexeddb} ms into IndexedDB (patch ${browser.patch_bytes} B) |`)
console.log(`\n| pair | capstan device bytes | client bytes, brotli decoder | client bytes, WebView (?codecs=zstd) |\n|---|---|---|---|`)
for (const r of rows) console.log(`| ${r.pair} | ${r.go.toLocaleString('en')} | ${r.brotli.toLocaleString('en')}${r.brotli === r.go ? ' (equal)' : ''} | ${r.webview.toLocaleString('en')} (${((r.webview / r.go - 1) * 100).toFixed(1)} %) |`)
