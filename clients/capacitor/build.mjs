// Builds dist/: the library as ES modules with type declarations (what an
// app's bundler takes), dist/capstan.min.js (the client in one minified file,
// what the headless Chromium test loads), and dist/size.json: the size budget,
// measured on what an app ships: the client and its Capacitor binding,
// minified and gzipped, without @capacitor/* (the app has those anyway).
import { build } from 'esbuild'
import { execFileSync } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'

rmSync('dist', { recursive: true, force: true })
const common = { bundle: true, format: 'esm', target: 'es2020', logLevel: 'warning', legalComments: 'none' }
await build({ ...common, entryPoints: ['src/index.ts', 'src/capacitor.ts'], outdir: 'dist', splitting: true, external: ['fzstd', '@noble/ed25519', '@capacitor/*'], sourcemap: true })
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/capstan.min.js', minify: true })
await build({ ...common, entryPoints: ['src/capacitor.ts'], outfile: 'dist/capacitor.min.js', minify: true, external: ['@capacitor/*'] })
execFileSync('npx', ['tsc', '-p', '.', '--noEmit', 'false', '--declaration', '--emitDeclarationOnly', '--outDir', 'dist'], { stdio: 'inherit' })
const min = readFileSync('dist/capacitor.min.js')
const size = { minified: min.length, gzip: gzipSync(min, { level: 9 }).length }
writeFileSync('dist/size.json', JSON.stringify(size) + '\n')
if (process.argv.includes('--size')) console.log(`client + Capacitor binding: ${size.minified} B minified, ${size.gzip} B gzipped`)
