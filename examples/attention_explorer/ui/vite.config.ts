/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The dashboard serves on :3001 (the spec's port); `--host` still works from the CLI.
export default defineConfig({
  plugins: [react()],
  server: { port: 3001, host: "127.0.0.1", strictPort: true },
  preview: { port: 3001, host: "127.0.0.1", strictPort: true },
  test: {
    environment: "node",
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
  },
});
