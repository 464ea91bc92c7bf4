// What the client needs from the app's platform, kept small so that a
// Capacitor app binds it to @capacitor/filesystem, @capacitor/preferences and
// the core WebView plugin (capacitor.ts), and tests bind it to a temp folder
// (Node) or IndexedDB (a browser).
import type { BrotliFactory } from './codecs.js'

/**
 * Files is the folder that holds the releases the client installs. Paths
 * are relative to it, "/"-separated, already validated by the client.
 */
export interface Files {
  /** write creates a file (and its folders); it must never replace or follow an existing entry. */
  write(path: string, data: Uint8Array, mode: number): Promise<void>
  /** read returns a file's bytes; a missing file throws. */
  read(path: string): Promise<Uint8Array>
  /** remove deletes a file or a folder and everything under it; a missing one is fine. */
  remove(path: string): Promise<void>
  /** list returns the names in a folder; [] for a missing one. */
  list(path: string): Promise<string[]>
  /** serverPath is what WebView.setServerBasePath takes to serve folder (an absolute path on a device). */
  serverPath(folder: string): Promise<string>
}

/** Storage keeps the client's small state (device id, installed release, failed list). */
export interface Storage {
  get(key: string): Promise<string | null>
  set(key: string, value: string): Promise<void>
}

/** WebView is the core Capacitor plugin that serves the app from a folder. */
export interface WebView {
  /** getServerBasePath returns the folder served now ("" or the app's own for the built-in bundle). */
  getServerBasePath(): Promise<string>
  /** setServerBasePath serves folder from now on: the WebView reloads from it. */
  setServerBasePath(path: string): Promise<void>
  /** persistServerBasePath makes the folder served now the one the app starts with. */
  persistServerBasePath(): Promise<void>
}

export interface Platform {
  files: Files
  storage: Storage
  webView: WebView
  /** fetch to use (default: globalThis.fetch) */
  fetch?: typeof fetch
  /** brotli decoder; undefined: DecompressionStream("brotli") where the engine has it */
  brotli?: BrotliFactory | null
}
