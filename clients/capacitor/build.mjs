// Builds dist/: the library as ES modules (what an app's bundler takes) and
// dist/capstan.min.js, one minified browser bundle (what the size budget and
// the headless Chromium test measure).
import { build } from 'esbuild'
import { gzipSync } from 'node:zlib'
import { readFileSync, writeFileSync } from 'node:fs'

const common = { bundle: true, format: 'esm', target: 'es2020', logLevel: 'warning', legalComments: 'none' }
await build({ ...common, entryPoints: ['src/index.ts'], outdir: 'dist', external: ['fzstd', '@noble/ed25519', '@capacitor/*'], sourcemap: true })
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/capstan.min.js', minify: true, metafile: true })
const min = readFileSync('dist/capstan.min.js')
const size = { minified: min.length, gzip: gzipSync(min, { level: 9 }).length }
writeFileSync('dist/size.json', JSON.stringify(size) + '\n')
if (process.argv.includes('--size')) console.log(`dist/capstan.min.js: ${size.minified} B minified, ${size.gzip} B gzipped`)
