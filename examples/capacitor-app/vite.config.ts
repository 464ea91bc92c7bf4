import { defineConfig } from 'vite'

// Top-level await in main.ts: every WebView Capacitor 8 supports has it.
export default defineConfig({ build: { target: 'es2022' } })
