import react from '@vitejs/plugin-react'
import { defineConfig } from 'vitest/config'

// `npm run dev` proxies the API and the socket to a sidecar (LLM_SIDECAR, default 127.0.0.1:8765),
// presenting the sidecar's own origin, which is the only one its socket accepts.
const sidecar = process.env.LLM_SIDECAR ?? 'http://127.0.0.1:8765'

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', sourcemap: true, chunkSizeWarningLimit: 800 },
  server: {
    proxy: {
      '/api': { target: sidecar, changeOrigin: true },
      '/healthz': { target: sidecar, changeOrigin: true },
      '/ws': { target: sidecar, changeOrigin: true, ws: true, headers: { origin: sidecar } },
    },
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
  },
})
