// The size budget: the client and its Capacitor binding, as an app ships
// them (minified, gzipped; @capacitor/* excluded), stay under 30 KB.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

test('the client is under 30 KB minified and gzipped', () => {
  const size = JSON.parse(readFileSync(new URL('../dist/size.json', import.meta.url)))
  assert.ok(size.gzip < 30 * 1024, `${size.gzip} B gzipped`)
})
