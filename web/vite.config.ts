import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The control plane serves web/dist (src/server/routes/web.ts); `npm run build:web` writes it.
export default defineConfig({
  root: new URL('.', import.meta.url).pathname,
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Hashed file names under /assets/ are what the server caches for a year.
    assetsDir: 'assets',
    reportCompressedSize: false,
  },
  server: {
    // `npx vite web` during development: the API comes from a running `berth up`.
    proxy: { '/api': { target: process.env.BERTH_URL ?? 'http://127.0.0.1:7420', ws: true }, '/health': process.env.BERTH_URL ?? 'http://127.0.0.1:7420' },
  },
});
