// The Capacitor binding: releases live where Capacitor's core WebView plugin
// can serve them and find them again at the next start, the state in
// @capacitor/preferences. Import it from "@capstan/capacitor/capacitor".
//
// iOS: CAPBridgeViewController restores a persisted folder by its last path
// component only, under Library/NoCloud/ionic_built_snapshots, so releases live
// there. Android: the full path is persisted; releases live in the app's
// private files folder (Directory.Data). Neither is backed up to the cloud.
import { Capacitor, WebView as CapWebView } from '@capacitor/core'
import { Directory, Filesystem } from '@capacitor/filesystem'
import { Preferences } from '@capacitor/preferences'
import { base64Decode, base64Encode } from './bytes.js'
import { Capstan, Options, Result } from './client.js'
import { CapstanError } from './errors.js'
import type { Files, Platform } from './platform.js'

/** capacitorPlatform binds the client to the device: @capacitor/filesystem, @capacitor/preferences and the WebView plugin. */
export function capacitorPlatform(): Platform {
  const ios = Capacitor.getPlatform() === 'ios'
  const directory = ios ? Directory.Library : Directory.Data
  const root = ios ? 'NoCloud/ionic_built_snapshots' : 'capstan'
  const at = (p: string) => (p ? `${root}/${p}` : root)
  const exists = async (p: string) => {
    try {
      return await Filesystem.stat({ path: at(p), directory })
    } catch {
      return null
    }
  }
  const files: Files = {
    async write(p, data) {
      // No O_EXCL in the plugin: refuse what is there (file or folder) first.
      if (await exists(p)) throw new CapstanError('unsafe-path', `${p} exists already`)
      await Filesystem.writeFile({ path: at(p), directory, data: base64Encode(data), recursive: true })
    },
    async read(p) {
      const r = await Filesystem.readFile({ path: at(p), directory })
      if (typeof r.data === 'string') return base64Decode(r.data)
      return new Uint8Array(await r.data.arrayBuffer())
    },
    async remove(p) {
      const st = await exists(p)
      if (!st) return
      if (st.type === 'directory') await Filesystem.rmdir({ path: at(p), directory, recursive: true })
      else await Filesystem.deleteFile({ path: at(p), directory })
    },
    async list(p) {
      try {
        return (await Filesystem.readdir({ path: at(p), directory })).files.map((f) => f.name)
      } catch {
        return []
      }
    },
    async serverPath(folder) {
      const { uri } = await Filesystem.getUri({ path: at(folder), directory })
      return decodeURIComponent(uri.replace(/^file:\/\//, ''))
    },
  }
  return {
    files,
    storage: {
      get: async (key) => (await Preferences.get({ key })).value,
      set: (key, value) => Preferences.set({ key, value }),
    },
    webView: {
      getServerBasePath: async () => (await CapWebView.getServerBasePath()).path ?? '',
      setServerBasePath: (path) => CapWebView.setServerBasePath({ path }),
      persistServerBasePath: () => CapWebView.persistServerBasePath(),
    },
  }
}

/** The operations an app calls; what liveUpdates returns. */
export interface LiveUpdates {
  readonly state: Capstan['state']
  check(): Promise<Result>
  update(opts?: { switchNow?: boolean }): Promise<Result>
  confirm(): Promise<Result>
}

/**
 * liveUpdates opens the client on the device and runs start(): call it first
 * thing in main.ts; then confirm() once the app has started well, and
 * update() whenever the app likes (in the background: with switchNow false
 * the new release is served at the next start). It never throws: an app
 * whose update client cannot start (bad keys, no storage, a plain browser
 * without the WebView plugin) still starts, and its calls answer "failed".
 */
export async function liveUpdates(o: Omit<Options, 'platform'>): Promise<LiveUpdates> {
  try {
    const c = await Capstan.open({ ...o, platform: capacitorPlatform() })
    const r = await c.start()
    if (r.status === 'failed') throw new CapstanError((r.code as CapstanError['code']) ?? 'state', r.error ?? 'start failed')
    return c
  } catch (e) {
    const err = e instanceof Error ? e.message : String(e)
    console.warn('capstan: live updates are off:', err)
    const off = async (): Promise<Result> => ({ status: 'failed', from: '', to: '', bytes: 0, ms: 0, error: err, code: e instanceof CapstanError ? e.code : 'state' })
    return { state: { current: null, pending: null, failed: [] }, check: off, update: off, confirm: off }
  }
}

export { Capstan }
export type { Options, Result }
