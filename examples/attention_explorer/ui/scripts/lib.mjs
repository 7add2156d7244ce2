// Shared setup for the end-to-end test and the streaming measurement: a real server
// (started here unless E2E_SERVER_URL is set), the built UI (mode "e2e") served by `vite preview`,
// and Debian's headless Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const UI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(UI_DIR, "../../..");
export const RESULTS = join(UI_DIR, "test-results");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitForHealth(url, timeoutMs, child) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (child && child.exitCode !== null) throw new Error(`server exited with code ${child.exitCode} before becoming healthy`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) return Date.now() - t0;
    } catch {
      /* not up yet */
    }
    await sleep(500);
  }
  throw new Error(`${url}/health did not answer 200 within ${timeoutMs / 1000}s`);
}

/** Start `python -m sglang.launch_server` with capture on, or use E2E_SERVER_URL. */
export async function startServer(extraArgs = [], nice = 0) {
  if (process.env.E2E_SERVER_URL) {
    const url = process.env.E2E_SERVER_URL.replace(/\/+$/, "");
    await waitForHealth(url, 30_000);
    return { url, stop: async () => {}, log: () => "" };
  }
  const port = await freePort();
  const python = process.env.PYTHON || "python";
  const args = ["-m", "sglang.launch_server", "--return-attention-tokens", "--attention-tokens-top-k", "32", "--port", String(port), "--host", "127.0.0.1", ...extraArgs];
  const [cmd, argv] = nice > 0 ? ["nice", ["-n", String(nice), python, ...args]] : [python, args];
  const child = spawn(cmd, argv, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env } });
  let log = "";
  const keep = (d) => {
    log += d.toString();
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null) return;
    child.kill("SIGTERM");
    for (let i = 0; i < 40 && child.exitCode === null; i++) await sleep(250);
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  try {
    const ms = await waitForHealth(url, Number(process.env.E2E_SERVER_TIMEOUT_S || 300) * 1000, child);
    console.error(`# server ${url} healthy after ${(ms / 1000).toFixed(1)}s`);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n--- server log (tail) ---\n${log.slice(-4000)}`);
  }
  return { url, stop, log: () => log };
}

// The e2e build: git-ignored, apart from dist/ so a production `vite build` never holds the test handles.
export const E2E_DIST = join(RESULTS, "ui-dist");

/**
 * Build the UI and serve it with vite preview: the production bundle, like a deployment, built
 * in mode "e2e", which turns on the window test handles (__TEST_HOOKS__ in vite.config.ts:
 * window.__attentionExplorer, window.__manifold) that the scripts read.
 */
export async function startUi() {
  const vite = await import("vite");
  const mode = "e2e";
  // UI_NO_MINIFY=1 keeps function names readable in profiles.
  await vite.build({ root: UI_DIR, mode, logLevel: "warn", build: { outDir: E2E_DIST, emptyOutDir: true, minify: !process.env.UI_NO_MINIFY } });
  const port = await freePort();
  const server = await vite.preview({ root: UI_DIR, mode, build: { outDir: E2E_DIST }, preview: { port, host: "127.0.0.1", strictPort: true }, logLevel: "warn" });
  return { url: `http://127.0.0.1:${port}`, stop: () => server.close() };
}

export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const userData = mkdtempSync(join(tmpdir(), "ae-chromium-"));
  const ctx = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  return {
    ctx,
    close: async () => {
      await ctx.close().catch(() => {});
      rmSync(userData, { recursive: true, force: true });
    },
  };
}

export function resultsDir() {
  mkdirSync(RESULTS, { recursive: true });
  return RESULTS;
}

/** Step runner shared by the e2e scripts: each step's result in order, and the failure count. */
export function stepRunner() {
  const results = [];
  return {
    results,
    get failed() {
      return results.filter((r) => !r.ok).length;
    },
    async step(name, fn) {
      const t0 = Date.now();
      try {
        await fn();
        results.push({ name, ok: true, ms: Date.now() - t0 });
        console.log(`ok - ${name} (${Date.now() - t0} ms)`);
      } catch (e) {
        results.push({ name, ok: false, error: String(e?.stack || e) });
        console.log(`not ok - ${name}\n  ${String(e?.message || e).split("\n").join("\n  ")}`);
        throw e;
      }
    },
  };
}

// A locator's count once it has held still for `quiet` ms (drawing that settles over a few
// renders, such as link curves whose targets mount later), or its last value at the timeout.
export async function settledCount(locator, { quiet = 400, timeoutMs = 5000 } = {}) {
  const end = Date.now() + timeoutMs;
  let last = await locator.count();
  let since = Date.now();
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    const n = await locator.count();
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (Date.now() - since >= quiet) {
      break;
    }
  }
  return last;
}

/**
 * Hover a dashboard token and make sure the dashboard focused that token. A layout shift
 * between Playwright computing the token's centre and the pointer arriving (the lens
 * closing on import re-wraps the text) can land the pointer on a neighbour, which then
 * rightly takes the focus; the pointer is moved off and the hover retried. Returns the
 * focused position.
 */
export async function hoverToken(page, tok, attempts = 3) {
  const want = await tok.getAttribute("data-pos");
  let got = null;
  for (let i = 0; i < attempts; i++) {
    await page.mouse.move(1, 1);
    await tok.hover();
    try {
      await page.locator(`.tok.focus[data-pos="${want}"]`).waitFor({ timeout: 2000 });
      return Number(want);
    } catch {
      got = await page.locator(".tok.focus").first().getAttribute("data-pos", { timeout: 500 }).catch(() => null);
    }
  }
  throw new Error(`assertion failed: hovering token ${want} focused ${got ?? "nothing"} in ${attempts} tries`);
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
