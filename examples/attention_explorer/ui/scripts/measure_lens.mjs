// Issue-21 measurements on the production bundle (vite build, served by vite preview):
//  1. a raw top-32 stream of N tokens (default 500) with the Token Lens open while the pointer
//     hovers a new token every ~120 ms: frame lengths (rAF deltas), time in long tasks, and
//     hover-to-lens latency (the token's mouseover event to the first frame whose Token Lens names
//     that token);
//  2. the attention map of a 2,048-token sequence (dense replay, mean of the heads of the last
//     layer): time to first paint (and its parts: replay request, decode + paint), then pan/zoom
//     frame lengths and canvas redraw times over 120 wheel and drag events.
// Prints JSON and writes test-results/ui_lens_map.json (copy it to benchmarks/results/).
//
//   node scripts/measure_lens.mjs [--tokens 500] [--map-tokens 2048]
//   E2E_SERVER_URL=http://127.0.0.1:30000 node scripts/measure_lens.mjs
import { writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { launchBrowser, resultsDir, startServer, startUi } from "./lib.mjs";

const { values: a } = parseArgs({
  options: {
    tokens: { type: "string", default: "500" },
    "map-tokens": { type: "string", default: "2048" },
    "server-nice": { type: "string", default: "0" },
  },
});
const nTokens = Number(a.tokens);
const mapT = Number(a["map-tokens"]);

const settings = (serverUrl) => ({
  serverUrl,
  apiKey: "",
  model: "",
  captureEnabled: true,
  capture: { mode: "raw", topK: 32, layers: "last", headIds: [], maskSystemPrompt: false, maskPrefix: 0, includePromptAttention: false },
  sampling: { maxTokens: nTokens, temperature: 0.8, topP: 0.95 },
  systemPrompt: "",
  extraJson: JSON.stringify({ ignore_eos: true }),
  sidecarUrl: "",
  adaptiveSampling: false,
});

const probe = () => {
  const w = window;
  w.__probe = { recording: false, last: 0, deltas: [], longTasks: [], hovers: [], pending: null };
  const loop = (t) => {
    const p = w.__probe;
    if (p.recording) {
      if (p.last) p.deltas.push(t - p.last);
      p.last = t;
    } else p.last = 0;
    // hover -> lens: the first frame whose lens names the hovered position
    if (p.pending) {
      const d = document.querySelector('[data-testid="token-lens"] .lens-head .muted')?.textContent ?? "";
      if (d.includes(`at position ${p.pending.pos}`)) {
        p.hovers.push(performance.now() - p.pending.t0);
        p.pending = null;
      }
    }
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
  addEventListener(
    "mouseover",
    (e) => {
      const el = e.target?.closest?.(".msg-assistant .tokens.output [data-pos]");
      if (el && w.__probe.recording) w.__probe.pending = { pos: Number(el.dataset.pos), t0: e.timeStamp };
    },
    true,
  );
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (w.__probe.recording) w.__probe.longTasks.push(e.duration);
    }).observe({ type: "longtask", buffered: false });
  } catch {
    /* no long-task API */
  }
};

const q = (arr, f) => {
  const d = [...arr].sort((x, y) => x - y);
  return d.length ? d[Math.min(d.length - 1, Math.floor(f * d.length))] : null;
};
const r1 = (x) => (x === null ? null : Math.round(x * 10) / 10);

let server, ui, browser;
let code = 0;
try {
  [server, ui] = await Promise.all([startServer([], Number(a["server-nice"])), startUi()]);
  browser = await launchBrowser();
  const page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
  await page.addInitScript(([s]) => localStorage.setItem("attention-explorer.settings.v1", JSON.stringify(s)), [settings(server.url)]);
  await page.addInitScript(probe);
  await page.goto(ui.url);
  await page.getByTestId("connection").filter({ hasText: /connected/ }).waitFor({ timeout: 30_000 });
  await page.getByRole("button", { name: "Settings" }).click(); // hide the panel, as a user reading the chat would

  // ---- 1. stream with the lens open and hovering
  await page.getByLabel("message").fill("Write a long story about a lighthouse keeper and the sea.");
  await page.evaluate(() => (window.__probe.recording = true));
  const t0 = Date.now();
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator(".msg-assistant .tokens.output .tok").nth(20).waitFor({ timeout: 120_000 });
  let moves = 0;
  for (;;) {
    const st = await page.locator('[data-hud="status"]').innerText();
    if (st !== "streaming") break;
    const toks = page.locator(".msg-assistant .tokens.output .tok");
    const n = await toks.count();
    // a token near the end (the part on screen while following the stream), a different one each time
    const tok = toks.nth(Math.max(0, n - 2 - (moves % 15)));
    const box = await tok.boundingBox().catch(() => null);
    if (box) {
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      moves++;
    }
    await page.waitForTimeout(120);
    if (Date.now() - t0 > 1_200_000) throw new Error("stream did not finish in 20 minutes");
  }
  await page.evaluate(() => (window.__probe.recording = false));
  const stream = await page.evaluate(() => {
    const p = window.__probe;
    const run = window.__attentionExplorer.session().latestRun();
    return { deltas: p.deltas, longTasks: p.longTasks, hovers: p.hovers, status: run.status, tokens: run.tokens.length, first: run.metrics.firstRenderMs };
  });
  const streamReport = {
    tokens: stream.tokens,
    status: stream.status,
    wall_s: (Date.now() - t0) / 1000,
    first_sse_byte_to_first_render_ms: r1(stream.first),
    frames: stream.deltas.length,
    p50_frame_ms: r1(q(stream.deltas, 0.5)),
    p99_frame_ms: r1(q(stream.deltas, 0.99)),
    longest_frame_ms: r1(Math.max(...stream.deltas)),
    frames_over_50ms: stream.deltas.filter((x) => x > 50).length,
    long_tasks: stream.longTasks.length,
    time_in_long_tasks_ms: r1(stream.longTasks.reduce((x, y) => x + y, 0)),
    longest_long_task_ms: r1(stream.longTasks.length ? Math.max(...stream.longTasks) : 0),
    hover_moves: moves,
    hovers_measured: stream.hovers.length,
    hover_to_lens_p50_ms: r1(q(stream.hovers, 0.5)),
    hover_to_lens_p90_ms: r1(q(stream.hovers, 0.9)),
    hover_to_lens_max_ms: r1(stream.hovers.length ? Math.max(...stream.hovers) : null),
  };
  console.error(`# stream: ${JSON.stringify(streamReport)}`);

  // ---- 2. attention map of a mapT-token sequence: an imported trace whose prompt is mapT token ids
  const ids = Array.from({ length: mapT }, (_, i) => 260 + ((i * 7919) % 20000));
  const runId = "run-map";
  const lines = [
    { record_type: "header", version: "1.2", trace_id: "trace-map-2048", created_at: new Date().toISOString(), model: "SmolLM2-135M-Instruct" },
    { record_type: "message", id: "user-1", role: "user", content: "(synthetic ids)", created_at: new Date().toISOString() },
    {
      record_type: "message", id: "assistant-2", role: "assistant", content: "", created_at: new Date().toISOString(),
      run: { id: runId, model: "SmolLM2-135M-Instruct", status: "done", started_at: new Date().toISOString(), capture: settings("").capture, sampling: { maxTokens: 1, temperature: 0, topP: 1 }, prompt_len: mapT - 1 },
    },
    ...ids.slice(0, mapT - 1).map((id, i) => ({ record_type: "token", run_id: runId, index: i, kind: "prompt", step: null, token_id: id, text: `t${i}` })),
    { record_type: "token", run_id: runId, index: mapT - 1, kind: "output", step: 0, token_id: ids[mapT - 1], text: "end", segment_id: `${runId}-output-0` },
  ];
  const file = join(resultsDir(), "measure-map-trace.jsonl");
  writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  await page.getByTestId("import-input").setInputFiles(file);
  await page.getByTestId("banner").filter({ hasText: "Imported" }).waitFor();
  const tMap = await page.evaluate(() => performance.now());
  await page.locator('[data-view="map"]').click();
  const status = page.getByTestId("map-status");
  await status.filter({ hasText: "×" }).waitFor({ timeout: 300_000 });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="map-canvas"]')?.dataset.draws ?? 0) > 0 && document.querySelector('[data-testid="map-status"]')?.dataset.paintMs);
  const firstPaint = await page.evaluate((t) => new Promise((res) => requestAnimationFrame(() => res(performance.now() - t))), tMap);
  const T = Number(await status.getAttribute("data-t"));
  const fetchMs = Number(await status.getAttribute("data-fetch-ms"));
  const paintMs = Number(await status.getAttribute("data-paint-ms"));
  // pan / zoom
  await page.evaluate(() => {
    const p = window.__probe;
    p.deltas = [];
    p.longTasks = [];
    p.draws = [];
    const c = document.querySelector('[data-testid="map-canvas"]');
    new MutationObserver(() => p.recording && p.draws.push(Number(c.dataset.lastDrawMs))).observe(c, { attributes: true, attributeFilter: ["data-draws"] });
    p.recording = true;
  });
  const cb = await page.getByTestId("map-canvas").boundingBox();
  const cx = cb.x + cb.width * 0.45;
  const cy = cb.y + cb.height * 0.5;
  await page.mouse.move(cx, cy);
  for (let i = 0; i < 60; i++) {
    await page.mouse.wheel(0, i < 40 ? -120 : 120);
    await page.waitForTimeout(16);
  }
  for (let k = 0; k < 3; k++) {
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let i = 1; i <= 20; i++) await page.mouse.move(cx + (k % 2 ? -1 : 1) * i * 8, cy + i * 4);
    await page.mouse.up();
  }
  await page.waitForTimeout(300);
  const pz = await page.evaluate(() => {
    const p = window.__probe;
    p.recording = false;
    return { deltas: p.deltas, draws: p.draws, longTasks: p.longTasks };
  });
  const mapReport = {
    tokens: T,
    layer: "last (29)",
    head: "mean",
    time_to_first_paint_ms: r1(firstPaint),
    replay_request_ms: fetchMs,
    bitmap_paint_ms: paintMs,
    pan_zoom_events: 60 + 60,
    redraws: pz.draws.length,
    redraw_ms_p50: r1(q(pz.draws, 0.5)),
    redraw_ms_p99: r1(q(pz.draws, 0.99)),
    redraw_ms_max: r1(pz.draws.length ? Math.max(...pz.draws) : null),
    frames: pz.deltas.length,
    frame_ms_p50: r1(q(pz.deltas, 0.5)),
    frame_ms_p99: r1(q(pz.deltas, 0.99)),
    frame_ms_max: r1(pz.deltas.length ? Math.max(...pz.deltas) : null),
    frames_over_50ms: pz.deltas.filter((x) => x > 50).length,
    long_tasks: pz.longTasks.length,
  };
  await page.screenshot({ path: join(resultsDir(), "measure-map.png") });
  const report = {
    benchmark: "ui_lens_map",
    build: "production bundle (vite build, mode e2e for the test handles) served by vite preview",
    browser: "headless chromium (/usr/bin/chromium) --disable-gpu, 1440x900, devicePixelRatio 1",
    machine: { cpus: cpus().length, loadavg_1m: Math.round(loadavg()[0] * 100) / 100 },
    server: server.url,
    stream_lens_hover: streamReport,
    attention_map: mapReport,
    measured_at: new Date().toISOString(),
  };
  writeFileSync(join(resultsDir(), "ui_lens_map.json"), JSON.stringify(report, null, 1));
  console.log(JSON.stringify(report, null, 1));
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await browser?.close();
  await ui?.stop();
  await server?.stop();
  process.exit(code);
}
