// Measures the Inspect view on a long trace: imports a generated 10,000-token trace
// (raw top-32 entries, written in the trace schema; synthetic values, no server needed)
// and scrolls the virtualized list top to bottom, recording requestAnimationFrame deltas.
// Prints JSON.
//
//   node scripts/measure_inspect.mjs [--tokens 10000]
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { launchBrowser, resultsDir, startUi } from "./lib.mjs";

const { values: a } = parseArgs({ options: { tokens: { type: "string", default: "10000" }, "top-k": { type: "string", default: "32" } } });
const N = Number(a.tokens);
const K = Number(a["top-k"]);
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(K) || K < 1) {
  console.error("--tokens and --top-k must be positive integers");
  process.exit(2);
}

/** A trace in schema 1.0: one run of N output tokens after a 32-token prompt. */
function makeTrace() {
  const P = 32;
  const run = "run-long";
  const lines = [];
  const push = (r) => lines.push(JSON.stringify(r));
  push({ record_type: "header", version: "1.0", trace_id: "trace-long", created_at: new Date(0).toISOString(), model: "synthetic" });
  push({ record_type: "message", id: "u1", role: "user", content: "long", created_at: new Date(0).toISOString() });
  const words = ["the", " sea", " light", " keeper", " walked", ",", " and", " night", " fell", ".", "\n"];
  push({
    record_type: "message",
    id: "a1",
    role: "assistant",
    content: "",
    created_at: new Date(0).toISOString(),
    run: {
      id: run,
      model: "synthetic",
      status: "done",
      started_at: new Date(0).toISOString(),
      capture: { mode: "raw", topK: K, layers: "last", headIds: [], maskSystemPrompt: false, maskPrefix: 0, includePromptAttention: false },
      sampling: { maxTokens: N, temperature: 0.8, topP: 0.95 },
      prompt_len: P,
    },
  });
  for (let i = 0; i < P; i++) push({ record_type: "token", run_id: run, index: i, kind: "prompt", step: null, token_id: i, text: ` p${i}`, masked: false });
  for (let s = 0; s < N; s++) {
    push({ record_type: "token", run_id: run, index: P + s, kind: "output", step: s, token_id: 100 + (s % 11), text: words[s % 11], segment_id: `${run}-output-0` });
  }
  for (let s = 0; s < N; s++) {
    const q = P + s - 1;
    const pos = [0];
    for (let d = 0; pos.length < Math.min(K, q + 1); d++) pos.push(q - d * 7 > 0 ? q - d * 7 : pos.length);
    const uniq = [...new Set(pos)];
    const probs = uniq.map((_, j) => 0.6 / (j + 1) ** 1.5);
    const tot = probs.reduce((x, y) => x + y, 0);
    const lse = 3;
    push({
      record_type: "step",
      run_id: run,
      step: s,
      token_index: P + s,
      entries: [{ layer_id: 29, decode_step: s, query_position: q, token_positions: uniq, attention_scores: probs.map((p) => p / tot), topk_logits: probs.map((p) => Math.log(p) + lse), logsumexp_candidates: lse }],
    });
  }
  push({ record_type: "segment", run_id: run, id: `${run}-output-0`, type: "assistant_output", start_step: 0, end_step: N - 1 });
  push({ record_type: "metrics", run_id: run, capture_mode: "raw", token_count: N, prompt_tokens: P, bytes_received: 0, attention_bytes: 0, chunk_count: N });
  return lines.join("\n") + "\n";
}

let ui, browser;
let code = 0;
try {
  const file = join(resultsDir(), `inspect-${N}.jsonl`);
  writeFileSync(file, makeTrace());
  ui = await startUi();
  browser = await launchBrowser();
  const page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
  // Inspect first, so the import is measured without the (non-virtualized) chat view.
  await page.goto(`${ui.url}/?server=http://127.0.0.1:9`);
  await page.locator('[data-view="inspect"]').click();
  const t0 = Date.now();
  await page.getByTestId("import-input").setInputFiles(file);
  await page.getByTestId("banner").filter({ hasText: "Imported" }).waitFor({ timeout: 120_000 });
  await page.locator('[data-testid="inspect-list"] .row').first().waitFor();
  const importMs = Date.now() - t0;
  const r = await page.evaluate(async () => {
    const el = document.querySelector('[data-testid="inspect-list"]');
    const deltas = [];
    let last = 0;
    const rowsSeen = new Set();
    await new Promise((done) => {
      const stepPx = 240; // about 8 rows per frame: a fast scroll
      const loop = (t) => {
        if (last) deltas.push(t - last);
        last = t;
        el.querySelectorAll(".row").forEach((r) => rowsSeen.add(r.getAttribute("data-pos")));
        if (el.scrollTop + el.clientHeight >= el.scrollHeight - 1) return done();
        el.scrollTop += stepPx;
        requestAnimationFrame(loop);
      };
      requestAnimationFrame(loop);
    });
    deltas.sort((x, y) => x - y);
    return {
      frames: deltas.length,
      longest_frame_ms: deltas[deltas.length - 1],
      p50_frame_ms: deltas[Math.floor(deltas.length / 2)],
      p99_frame_ms: deltas[Math.floor(deltas.length * 0.99)],
      frames_over_50ms: deltas.filter((d) => d > 50).length,
      rows_in_dom_at_end: el.querySelectorAll(".row").length,
      distinct_rows_rendered: rowsSeen.size,
    };
  });
  await page.screenshot({ path: join(resultsDir(), "measure-inspect.png") });
  const report = { benchmark: "ui_inspect_scroll", tokens: N, top_k: K, import_ms: importMs, ...r };
  writeFileSync(join(resultsDir(), "measure-inspect.json"), JSON.stringify(report, null, 1));
  console.log(JSON.stringify(report, null, 1));
} catch (e) {
  console.error(String(e?.stack || e));
  code = 1;
} finally {
  await browser?.close();
  await ui?.stop();
  process.exit(code);
}
