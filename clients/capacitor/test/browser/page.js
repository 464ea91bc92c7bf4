// The client in a page, on the browser's own WebCrypto, fetch and IndexedDB:
// a Platform whose files and storage are IndexedDB object stores, and a
// WebView that records what it would serve (a page cannot reload into a
// folder; a Capacitor WebView does). The test drives window.capstanTest.
import { Capstan, applyPatch, decodeFileList, fromHex, toHex, verifier } from './capstan.min.js'

function idb(name) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(name, 1)
    r.onupgradeneeded = () => {
      r.result.createObjectStore('files')
      r.result.createObjectStore('kv')
    }
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
}

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
}

function store(db, name, mode = 'readonly') {
  return db.transaction(name, mode).objectStore(name)
}

async function idbPlatform(name) {
  const db = await idb(name)
  const web = { served: '', persisted: '', reloads: 0 }
  const keys = async () => req(store(db, 'files').getAllKeys())
  const files = {
    async write(p, data, mode) {
      // add() refuses a key that exists: never replaces a file.
      await req(store(db, 'files', 'readwrite').add({ data: data.slice(), mode }, p))
    },
    async read(p) {
      const v = await req(store(db, 'files').get(p))
      if (!v) throw new Error(`${p}: no such file`)
      return v.data
    },
    async remove(p) {
      const s = store(db, 'files', 'readwrite')
      await req(s.delete(p))
      await req(s.delete(IDBKeyRange.bound(p + '/', p + '/\uffff')))
    },
    async list(p) {
      const pre = p ? p + '/' : ''
      const names = new Set()
      for (const k of await keys()) if (k.startsWith(pre)) names.add(k.slice(pre.length).split('/')[0])
      return [...names]
    },
    serverPath: async (folder) => '/releases/' + folder,
  }
  return {
    web,
    restart() {
      web.served = web.persisted
    },
    files,
    storage: {
      get: async (k) => (await req(store(db, 'kv').get(k))) ?? null,
      set: async (k, v) => void (await req(store(db, 'kv', 'readwrite').put(v, k))),
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
    /** tree returns path → sha256 of every file of the folder served now. */
    async tree() {
      const pre = web.served.split('/').pop() + '/'
      const out = {}
      for (const k of await keys()) {
        if (!k.startsWith(pre)) continue
        out[k.slice(pre.length)] = toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', await files.read(k))))
      }
      return out
    },
  }
}

let plat
window.capstanTest = {
  async open(cfg) {
    plat ??= await idbPlatform('capstan-test')
    return Capstan.open({ ...cfg, platform: plat })
  },
  /** step runs one client operation on a fresh Capstan (as a fresh page load would). */
  async step(cfg, op, arg) {
    const c = await this.open(cfg)
    const res = await c[op](arg)
    return { res, served: plat.web.served, persisted: plat.web.persisted, failed: c.state.failed, verifier: verifier() }
  },
  restart() {
    plat.restart()
  },
  tree: () => plat.tree(),
  /**
   * applyTimes applies one patch n times from the release served now, into
   * memory and into IndexedDB, and returns the times in ms.
   */
  async applyTimes(edge, baseId, targetId, doc, n) {
    const base = plat.web.served.split('/').pop()
    const listBytes = await plat.files.read(`capstan-lists/${(await baseDoc(edge, baseId)).files.sha256}`)
    const files = decodeFileList(listBytes)
    const patch = new Uint8Array(await (await fetch(`${edge}/v1/patches/${baseId}/${targetId}?codecs=zstd`)).arrayBuffer())
    const baseFiles = { read: (p) => plat.files.read(`${base}/${p}`) }
    const times = { memory: [], indexeddb: [] }
    for (let i = 0; i < n; i++) {
      const mem = new Map()
      let t = performance.now()
      await applyPatch(patch, { id: fromHex(baseId), files, dir: baseFiles }, { id: fromHex(targetId), files: doc.files }, {
        write: async (p, d) => void mem.set(p, d),
        read: async (p) => mem.get(p),
      })
      times.memory.push(performance.now() - t)
      const folder = `bench-${i}`
      t = performance.now()
      await applyPatch(patch, { id: fromHex(baseId), files, dir: baseFiles }, { id: fromHex(targetId), files: doc.files }, {
        write: (p, d, m) => plat.files.write(`${folder}/${p}`, d, m),
        read: (p) => plat.files.read(`${folder}/${p}`),
      })
      times.indexeddb.push(performance.now() - t)
      await plat.files.remove(folder)
    }
    return { times, patchBytes: patch.length }
  },
}

async function baseDoc(edge, id) {
  const env = await (await fetch(`${edge}/v1/releases/${id}`)).json()
  return env.signed
}

window.capstanReady = true
