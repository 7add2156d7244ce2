// Build-time flags (vite.config.ts `define`).

/**
 * True in test builds only (`vite --mode e2e`, which scripts/lib.mjs uses, and Vitest): the
 * `window.__attentionExplorer` / `window.__manifold` handles for the end-to-end tests and
 * measurements. The production build has it false, so the handles are removed from the bundle.
 */
declare const __TEST_HOOKS__: boolean;
