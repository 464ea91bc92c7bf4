// The client end to end against a real `capstan dev`, with the filesystem
// and the WebView bound to a temp folder: first install, a patch update whose
// bytes equal the Go device's, confirm, revert of an unconfirmed release at
// the next start, the failed list, fallbacks, wrong keys, events.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { Capstan } from '../dist/index.js'
import { fixtures, goDevice, nodePlatform, startDev, tempDir, treeFiles, upload } from './helpers.mjs'

async function sameTree(a, b) {
  const fa = await treeFiles(a)
  assert.deepEqual(fa, await treeFiles(b))
  for (const f of fa) assert.ok((await fs.readFile(path.join(a, f))).equals(await fs.readFile(path.join(b, f))), f)
}

test('a Capacitor client updates, confirms, reverts and falls back against a real origin', { timeout: 300_000 }, async (t) => {
  const dev = await startDev()
  t.after(() => dev.stop())
  const work = await tempDir()
  t.after(() => fs.rm(work, { recursive: true, force: true }))
  const app = 'com.capstan.client'
  const zips = [path.join(fixtures, 'vite-vue/a.zip'), path.join(fixtures, 'vite-vue/b.zip'), path.join(fixtures, 'swagger-ui/www-5.34.0.zip')]
  const plat = nodePlatform(path.join(work, 'phone'))
  const open = (p = plat, extra = {}) => Capstan.open({ app, channel: 'production', edges: [dev.edge], keys: dev.trustPem, platform: p, nativeVersion: '1.0.0', ...extra })
  const goDir = path.join(work, 'go')
  const ids = []

  await t.test('first install: the full stream, served at once, confirmed by the new bundle', async () => {
    ids.push(await upload(dev, app, '1.0.0', zips[0]))
    const c = await open()
    assert.match(c.deviceId, /^[0-9a-f-]{36}$/)
    assert.equal((await c.start()).status, 'ok')
    const r = await c.update()
    assert.equal(r.status, 'updated', JSON.stringify(r))
    assert.equal(r.mode, 'full')
    assert.equal(r.to, '1.0.0')
    assert.equal(path.basename(plat.web.served), 'capstan-' + ids[0].slice(0, 16))
    assert.equal(plat.web.persisted, '', 'not persisted before the new bundle confirms')
    // The WebView reloaded: the new bundle starts and confirms.
    const n = await open()
    assert.equal((await n.start()).status, 'pending')
    assert.equal((await n.confirm()).status, 'confirmed')
    assert.equal(plat.web.persisted, plat.web.served)
    await goDevice(dev, app, goDir)
    await sameTree(plat.web.served, path.join(goDir, 'current'))
  })

  await t.test('an update is a patch, and costs the bytes the Go device downloads', async () => {
    ids.push(await upload(dev, app, '1.0.1', zips[1]))
    plat.restart()
    const c = await open()
    assert.equal((await c.start()).status, 'ok')
    const r = await c.update()
    assert.equal(r.status, 'updated', JSON.stringify(r))
    assert.equal(r.mode, 'delta')
    const g = await goDevice(dev, app, goDir)
    assert.equal(g.mode, 'delta')
    assert.equal(r.bytes, g.bytes, `client ${r.bytes} B, Go device ${g.bytes} B`)
    await sameTree(plat.web.served, path.join(goDir, 'current'))
    const n = await open()
    await n.start()
    await n.confirm()
    // The old release folder is gone once the new one is confirmed.
    assert.deepEqual((await fs.readdir(path.dirname(plat.web.served))).filter((x) => x.startsWith('capstan-')).sort(), ['capstan-lists', path.basename(plat.web.served)].sort())
  })

  await t.test('a release launched and never confirmed is reverted at the next start, and never offered again', async () => {
    ids.push(await upload(dev, app, '1.0.2', zips[2]))
    const c = await open()
    await c.start()
    const r = await c.update()
    assert.equal(r.status, 'updated', JSON.stringify(r))
    // The new bundle crashes before it confirms: the app starts again on the persisted one.
    plat.restart()
    const n = await open()
    const s = await n.start()
    assert.equal(s.status, 'reverted')
    assert.equal(s.reverted, '1.0.2')
    assert.deepEqual(n.state.failed, [ids[2]])
    const again = await n.update()
    assert.equal(again.status, 'up-to-date')
    assert.equal(again.code, 'failed_on_device')
    assert.equal(path.basename(plat.web.served), 'capstan-' + ids[1].slice(0, 16))
  })

  await t.test('events reach the origin: the confirms and the revert are counted per release', async () => {
    // Only the client confirms (the Go device here never does) and reverts.
    const deadline = Date.now() + 20_000
    let rel
    for (;;) {
      const st = JSON.parse(await dev.cli('stats', '--app', app, '--json'))
      rel = Object.fromEntries(st.channels[0].releases.map((r) => [r.version, r]))
      if (rel['1.0.2']?.reverts >= 1 && rel['1.0.1']?.confirms >= 1 && rel['1.0.0']?.confirms >= 1) break
      if (Date.now() > deadline) assert.fail('stats: ' + JSON.stringify(rel))
      await new Promise((r) => setTimeout(r, 200))
    }
    assert.ok(rel['1.0.2'].installs >= 1 && rel['1.0.1'].downloads >= 1)
  })

  await t.test('fallbacks: a dead edge, then a damaged patch (full stream), then damaged streams (file by file)', async () => {
    const p2 = nodePlatform(path.join(work, 'phone2'))
    const c0 = await open(p2, { edges: ['http://127.0.0.1:9', dev.edge] })
    await c0.start()
    assert.equal((await c0.update({ switchNow: true })).status, 'updated')
    await (await open(p2, { edges: [dev.edge] })).confirm()
    // A newer release; patches arrive damaged, then every stream does.
    ids.push(await upload(dev, app, '1.0.3', zips[0]))
    const damage = (when) => async (url, init) => {
      const r = await fetch(url, init)
      if (!when(String(url))) return r
      const b = new Uint8Array(await r.arrayBuffer())
      b[b.length >> 1] ^= 0xff
      return new Response(b, { status: r.status, headers: r.headers })
    }
    const p3 = { ...p2, fetch: damage((u) => u.includes('/v1/patches/') && !u.includes('/v1/patches/0000')) }
    const c1 = await open(p3)
    const r1 = await c1.update({ switchNow: false })
    assert.equal(r1.status, 'staged', JSON.stringify(r1))
    assert.equal((await open(p2)).state.pending.version, '1.0.3')
    const staged = (await open(p2)).state.pending
    assert.equal(r1.mode, 'full')
    // Staged: the next start switches to it.
    const c2 = await open(p2)
    assert.equal((await c2.start()).status, 'switched')
    assert.equal(path.basename(p2.web.served), staged.folder)
    await (await open(p2)).confirm()
    ids.push(await upload(dev, app, '1.0.4', zips[1]))
    const p4 = { ...p2, fetch: damage((u) => u.includes('/v1/patches/')) }
    const r2 = await (await open(p4)).update()
    assert.equal(r2.status, 'updated', JSON.stringify(r2))
    assert.equal(r2.mode, 'files')
    await (await open(p2)).confirm()
  })

  await t.test('keys the release was not signed with: nothing is downloaded past the answer, nothing installed', async () => {
    const other = await tempDir()
    t.after(() => fs.rm(other, { recursive: true, force: true }))
    const p = nodePlatform(path.join(other, 'phone'))
    // A release key of our own (the app ships the wrong one), and the real origin key.
    const { generateKeyPairSync } = await import('node:crypto')
    const spki = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' })
    const wrongRelease = spki.replace('-----BEGIN PUBLIC KEY-----\n', '-----BEGIN PUBLIC KEY-----\nRole: release\n\n')
    const originPem = dev.trustPem.slice(dev.trustPem.indexOf('-----BEGIN', 10))
    const requests = []
    const c = await Capstan.open({ app, channel: 'production', edges: [dev.edge], keys: wrongRelease + originPem, platform: { ...p, fetch: (u, i) => (requests.push(String(u)), fetch(u, i)) } })
    const r = await c.update()
    assert.equal(r.status, 'failed')
    assert.equal(r.code, 'no-edge')
    assert.match(r.error, /not signed by a trusted key|does not verify/)
    assert.ok(requests.every((u) => !u.includes('/v1/patches/') && !u.includes('/v1/blobs/')), requests.join('\n'))
    assert.deepEqual(await p.files.list(''), [])
  })

  await t.test('a release that runs and never confirms is reverted after the confirm timeout, without a restart', async () => {
    ids.push(await upload(dev, app, '1.0.5', zips[1]))
    const before = plat.web.served
    const r = await (await open()).update()
    assert.equal(r.status, 'updated', JSON.stringify(r))
    assert.notEqual(plat.web.served, before)
    // The new bundle starts; its app never calls confirm().
    const n = await open(plat, { confirmTimeout: 200 })
    assert.equal((await n.start()).status, 'pending')
    const deadline = Date.now() + 10_000
    while (plat.web.served !== before) {
      if (Date.now() > deadline) assert.fail('not reverted: serving ' + plat.web.served)
      await new Promise((res) => setTimeout(res, 50))
    }
    const after = await open()
    assert.ok(after.state.failed.includes(ids[ids.length - 1]))
    assert.equal(after.state.pending, null)
    await after.start() // the next start removes the reverted folder
    assert.ok(!(await plat.files.list('')).includes('capstan-' + ids[ids.length - 1].slice(0, 16)))
  })

  await t.test('a release key rotation is followed: a release signed by the new key installs on a device that ships the old one', async () => {
    const p2 = nodePlatform(path.join(work, 'phone2'))
    const newKey = path.join(dev.dir, 'release-2.key')
    await dev.cli('keys', 'gen', '--out', newKey)
    await dev.cli('app', 'set', '--app', app, '--release-key', dev.signKey + '.pub')
    await dev.cli('keys', 'rotate', '--old', dev.signKey, '--new', newKey + '.pub', '--app', app, '--publish')
    ids.push(await upload(dev, app, '1.0.6', zips[2], 'production', newKey))
    const deadline = Date.now() + 20_000
    let r
    for (;;) {
      r = await (await open(p2)).update()
      if (r.status === 'updated' || Date.now() > deadline) break
      await new Promise((res) => setTimeout(res, 200)) // the edge learns the statement from the origin
    }
    assert.equal(r.status, 'updated', JSON.stringify(r))
    assert.equal(r.to, '1.0.6')
    await (await open(p2)).confirm()
    // The device keeps the rotated key set while the app ships the same keys.
    const again = await (await open(p2)).check()
    assert.equal(again.status, 'up-to-date', JSON.stringify(again))
  })
})
