// Manifold render and pan timing with many points, in headless Chromium on the CPU (no GPU,
// software raster). Adds N synthetic fingerprints through the page's measurement hook, then
// drags the map with real mouse events and records frame lengths (rAF deltas) and the
// renderer's own draw times. No model server is needed (the page shows "disconnected").
//
//   node scripts/measure_manifold.mjs [--points 100000] [--moves 240]
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser, resultsDir, startUi } from "./lib.mjs";

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const POINTS = arg("points", 100_000);
const MOVES = arg("moves", 240);
const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(2) : null;
};

const ui = await startUi();
const browser = await launchBrowser();
let out;
try {
  const page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
  await page.goto(`${ui.url}/?server=${encodeURIComponent("http://127.0.0.1:9")}`);
  await page.getByRole("button", { name: "Settings" }).click(); // more room for the map
  await page.locator('[data-view="manifold"]').click();
  await page.getByTestId("manifold-canvas").waitFor();
  const t0 = Date.now();
  await page.evaluate((n) => window.__manifold.synthetic(n), POINTS);
  await page.waitForFunction((n) => window.__manifold.stats().points === n && window.__manifold.stats().draws > 0, POINTS, { timeout: 120_000 });
  const setupWallMs = Date.now() - t0;
  // one more full draw, timed alone
  const first = await page.evaluate(() => window.__manifold.stats());
  const redrawMs = await page.evaluate(() => window.__manifold.cloud().draw());
  const box = await page.getByTestId("manifold-canvas").boundingBox();
  await page.evaluate(() => {
    window.__frames = [];
    window.__drawsBefore = window.__manifold.stats().drawMs.length;
    let last = performance.now();
    const loop = (t) => {
      window.__frames.push(t - last);
      last = t;
      if (window.__measuring) requestAnimationFrame(loop);
    };
    window.__measuring = true;
    requestAnimationFrame(loop);
  });
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  for (let i = 0; i < MOVES; i++) {
    const a = (i / MOVES) * Math.PI * 4;
    await page.mouse.move(cx + Math.cos(a) * 200, cy + Math.sin(a) * 120);
  }
  await page.mouse.up();
  await page.waitForTimeout(200);
  const m = await page.evaluate(() => {
    window.__measuring = false;
    const s = window.__manifold.stats();
    return { frames: window.__frames.slice(1), draws: s.drawMs.slice(window.__drawsBefore) };
  });
  const load = (await import("node:os")).loadavg();
  out = {
    points: POINTS,
    projection: first.projection,
    build_ms: +first.buildMs.toFixed(1),
    first_draw_ms: +first.drawMs[first.drawMs.length - 1].toFixed(2),
    redraw_ms: +redrawMs.toFixed(2),
    synthetic_to_visible_wall_ms: setupWallMs,
    pan: {
      mouse_moves: MOVES,
      frames: m.frames.length,
      frame_ms_p50: pct(m.frames, 50),
      frame_ms_p95: pct(m.frames, 95),
      frame_ms_p99: pct(m.frames, 99),
      frame_ms_max: +Math.max(...m.frames).toFixed(2),
      frames_over_50ms: m.frames.filter((f) => f > 50).length,
      redraws: m.draws.length,
      draw_ms_p50: pct(m.draws, 50),
      draw_ms_p95: pct(m.draws, 95),
      draw_ms_max: +Math.max(...m.draws).toFixed(2),
    },
    viewport: "1440x900, devicePixelRatio 1",
    browser: "headless Chromium, --disable-gpu (software raster)",
    loadavg_1m: +load[0].toFixed(2),
  };
} finally {
  await browser.close();
  await ui.stop();
}
console.log(JSON.stringify(out, null, 1));
writeFileSync(join(resultsDir(), `measure-manifold-${POINTS}.json`), JSON.stringify(out, null, 1));
