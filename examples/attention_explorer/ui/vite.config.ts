/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";

const UI_DIR = fileURLToPath(new URL(".", import.meta.url));

// Modes that get the window test handles (src/env.d.ts): "e2e" (scripts/lib.mjs builds the UI
// for the end-to-end tests and measurements with it; `npm run dev -- --mode e2e` for a dev
// server) and "test" (Vitest). `vite build` (production) leaves them out.
const TEST_HOOK_MODES = ["e2e", "test"];

// The dashboard serves on :3001 (the spec's port); `--host` still works from the CLI.
export default defineConfig(({ mode }) => ({
  plugins: [react()],
  define: { __TEST_HOOKS__: JSON.stringify(TEST_HOOK_MODES.includes(mode)) },
  server: { port: 3001, host: "127.0.0.1", strictPort: true, fs: { allow: [UI_DIR] } },
  preview: { port: 3001, host: "127.0.0.1", strictPort: true },
  test: {
    environment: "node",
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
  },
}));
