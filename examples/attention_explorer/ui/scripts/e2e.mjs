// End-to-end test in headless Chromium against a real server running the default model.
// It chats, watches tokens stream, hovers a token and checks its links, opens each lens
// tab, exports and re-imports the trace and compares, and checks that a malformed import
// shows a clear message and keeps what was loaded. Screenshots go to test-results/.
//
//   npm run test:e2e                      # starts python -m sglang.launch_server itself
//   E2E_SERVER_URL=http://127.0.0.1:30000 npm run test:e2e
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hoverToken, launchBrowser, resultsDir, settledCount, startServer, startUi, UI_DIR, assert, stepRunner } from "./lib.mjs";

const runner = stepRunner();
const { results, step } = runner;

const out = resultsDir();
const shot = (page, name) => page.screenshot({ path: join(out, `e2e-${name}.png`), fullPage: false });

let server, ui, browser, page;
const PROMPT = "Name three colors of the rainbow.";
try {
  await step("start server, UI and browser", async () => {
    [server, ui] = await Promise.all([startServer(), startUi()]);
    browser = await launchBrowser();
    page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
    page.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
  });

  await step("dashboard connects and reads capabilities", async () => {
    await page.goto(`${ui.url}/?server=${encodeURIComponent(server.url)}`);
    await page.getByTestId("connection").filter({ hasText: /connected/ }).waitFor({ timeout: 30_000 });
    const label = await page.getByTestId("connection").innerText();
    assert(!/capture off/.test(label), `server reports capture disabled: ${label}`);
  });

  await step("configure a run: raw top-32, prompt attention, masked system prompt", async () => {
    await page.getByLabel("max tokens").fill("24");
    await page.getByLabel("temperature").fill("0");
    await page.getByLabel("top k").fill("32");
    await page.getByLabel("system prompt", { exact: true }).fill("You are a concise assistant.");
    await page.getByLabel("mask system prompt", { exact: true }).check();
    await page.getByText("include prompt attention").click();
  });

  let outputTexts = [];
  await step("send a prompt and see tokens stream", async () => {
    await page.getByLabel("message").fill(PROMPT);
    await page.getByRole("button", { name: "Send" }).click();
    // Sample the output token count while streaming: it must grow in more than one step.
    const counts = [];
    const t0 = Date.now();
    for (;;) {
      const n = await page.locator(".msg-assistant .tokens.output .tok").count();
      if (!counts.length || counts[counts.length - 1] !== n) counts.push(n);
      const status = await page.locator('[data-hud="status"]').innerText().catch(() => "");
      if (status && status !== "streaming") break;
      if (Date.now() - t0 > 180_000) throw new Error("generation did not finish in 180 s");
      await page.waitForTimeout(30);
    }
    const status = await page.locator('[data-hud="status"]').innerText();
    // a reply that hits max_tokens is "truncated" (finish_reason "length"), any other end "done"
    const finish = await page.evaluate(() => window.__attentionExplorer.session().latestRun().metrics.finishReason);
    assert(status === (finish === "length" ? "truncated" : "done"), `run status is ${status} (finish_reason ${finish}): ${await page.locator(".msg-assistant .error").allInnerTexts()}`);
    const final = await page.locator(".msg-assistant .tokens.output .tok").count();
    console.log(`# token counts seen while streaming: ${counts.join(",")}`);
    assert(final >= 3, `only ${final} output tokens`);
    assert(counts.filter((c) => c > 0 && c < final).length >= 1, `tokens did not appear progressively (${counts.join(",")})`);
    outputTexts = await page.locator(".msg-assistant .tokens.output .tok").allInnerTexts();
    await shot(page, "01-streamed");
  });

  await step("masked system prompt tokens are drawn as masked", async () => {
    const masked = await page.locator(".msg-assistant .tokens.prompt .tok.masked").count();
    const prompt = await page.locator(".msg-assistant .tokens.prompt .tok").count();
    assert(prompt > 0, "no prompt tokens shown");
    assert(masked > 0, "no masked prompt tokens although the system prompt is masked");
  });

  let hoverLinks = 0;
  let hoverTargets = [];
  let lensRows = [];
  await step("hover a token: link curves and the Links tab", async () => {
    const tok = page.locator(".msg-assistant .tokens.output .tok").nth(2);
    await hoverToken(page, tok);
    await page.locator(".link-overlay path").first().waitFor({ timeout: 5000 });
    hoverLinks = await settledCount(page.locator(".link-overlay path"));
    hoverTargets = await page.locator(".link-overlay path").evaluateAll((ps) => ps.map((p) => p.getAttribute("data-to")));
    assert(hoverLinks > 0, "no link paths drawn");
    await page.locator(".lens.open").waitFor();
    const rows = page.locator('.lens [data-panel="links"] .links-table tbody tr');
    const n = await rows.count();
    assert(n >= 5 && n <= 32, `links table has ${n} rows, expected top-k rows (<= 32)`);
    lensRows = await rows.allInnerTexts();
    // true p column: percentages whose sum is at most 100%
    const trueP = await page.locator('.lens [data-panel="links"] .links-table tbody tr td:nth-child(3)').allInnerTexts();
    const sum = trueP.map((t) => parseFloat(t)).reduce((a, b) => a + b, 0);
    assert(sum > 0 && sum <= 100.5, `true probabilities sum to ${sum}%`);
    await shot(page, "02-hover-links");
  });

  await step("click pins the token; Signal and MoE tabs", async () => {
    await page.locator(".msg-assistant .tokens.output .tok").nth(2).click();
    await page.locator(".lens .badge", { hasText: "pinned" }).waitFor();
    await page.locator('.lens [data-tab="signal"]').click();
    await page.locator(".lens .zone-card").waitFor();
    const bars = await page.locator(".lens svg.hist rect").count();
    assert(bars === 16, `histogram has ${bars} bars`);
    const zone = await page.locator(".lens .signal").getAttribute("data-zone");
    assert(["syntax_floor", "semantic_bridge", "long_range", "structure_ripple", "diffuse"].includes(zone), `zone ${zone}`);
    // the server's sink_mass, shown as its own row, equal to the run's entries (mean over the captured layers)
    const sinkText = await page.getByTestId("signal-sink-mass").locator("td.num").innerText();
    const wantSink = await page.evaluate((pos) => {
      const r = window.__attentionExplorer.session().latestRun();
      const raw = r.steps.get(pos - r.promptLen).raw;
      return raw.reduce((a, e) => a + e.sink_mass, 0) / raw.length;
    }, Number(await page.locator(".msg-assistant .tokens.output .tok").nth(2).getAttribute("data-pos")));
    assert(Math.abs(parseFloat(sinkText) - wantSink * 100) < 0.06, `Signal sink mass ${sinkText}, entries ${wantSink}`);
    // the default server sends fingerprint_version 2: the raw estimate is sink-aware and the note says so
    const note = page.getByTestId("signal-source-note");
    const noteVersion = await note.getAttribute("data-version");
    assert(noteVersion === "2" && /position 0 left out/.test(await note.innerText()), `Signal note v${noteVersion}: ${await note.innerText()}`);
    await shot(page, "03-signal");
    await page.locator('.lens [data-tab="moe"]').click();
    const moeText = await page.locator('.lens [data-panel="moe"]').innerText();
    assert(/dense|expert/i.test(moeText), `MoE tab says: ${moeText}`);
    await shot(page, "04-moe");
    await page.locator('.lens [data-tab="links"]').click();
  });

  await step("exclude sinks renormalizes the shown scores", async () => {
    await page.getByLabel("exclude sinks").first().check();
    const scores = await page.locator('.lens [data-panel="links"] section').first().locator("tbody tr td:nth-child(4)").allInnerTexts();
    const sum = scores.map((t) => parseFloat(t)).reduce((a, b) => a + b, 0);
    assert(Math.abs(sum - 100) < 1.5, `scores without sinks sum to ${sum}%`);
    const sinkRows = await page.locator('.lens [data-panel="links"] .sink-row').count();
    assert(sinkRows === 0, "sink rows still listed");
    await page.getByLabel("exclude sinks").first().uncheck();
  });

  await step("Inspect view lists tokens with their top-k", async () => {
    await page.locator('[data-view="inspect"]').click();
    const rows = page.locator('[data-testid="inspect-list"] .row');
    await rows.first().waitFor();
    assert((await rows.count()) > 3, "inspect shows too few rows");
    const chips = await page.locator('[data-testid="inspect-list"] .row.ph-output .chip').count();
    assert(chips > 0, "no top-k chips on output rows");
    await page.getByLabel("segment filter").selectOption("output");
    const phases = await page.locator('[data-testid="inspect-list"] .row .c-phase').allInnerTexts();
    assert(phases.length > 0 && phases.every((p) => p === "output"), `segment filter left ${[...new Set(phases)]}`);
    await shot(page, "05-inspect");
    await page.getByLabel("segment filter").selectOption("all");
    await page.locator('[data-view="chat"]').click();
  });

  let exported = "";
  await step("export the trace as JSONL", async () => {
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export" }).click()]);
    const path = join(out, "e2e-trace.jsonl");
    await dl.saveAs(path);
    exported = readFileSync(path, "utf8");
    const recs = exported.trim().split("\n").map((l) => JSON.parse(l));
    assert(recs[0].record_type === "header" && recs[0].version.startsWith("1."), "header first");
    const outTok = recs.filter((r) => r.record_type === "token" && r.kind === "output");
    assert(outTok.length === outputTexts.length, `exported ${outTok.length} output tokens, UI shows ${outputTexts.length}`);
    assert(recs.some((r) => r.record_type === "step" && r.entries.length > 0), "no step records with entries");
    assert(recs.some((r) => r.record_type === "metrics"), "no metrics record");
  });

  await step("import the trace and see the same tokens and links", async () => {
    await page.getByTestId("import-input").setInputFiles(join(out, "e2e-trace.jsonl"));
    await page.getByTestId("banner").filter({ hasText: "Imported" }).waitFor();
    assert((await page.getByLabel("session").locator("option").count()) === 2, "imported session not listed");
    const texts = await page.locator(".msg-assistant .tokens.output .tok").allInnerTexts();
    assert(JSON.stringify(texts) === JSON.stringify(outputTexts), "imported tokens differ from the live ones");
    await hoverToken(page, page.locator(".msg-assistant .tokens.output .tok").nth(2));
    await page.locator(".link-overlay path").first().waitFor({ timeout: 5000 });
    // an already-loaded trace (the live chat it came from) gets an id of its own
    const ids = await page.evaluate(() => window.__attentionExplorer.sessions().map((x) => x.traceId));
    assert(ids.length === 2 && ids[0] !== ids[1], `trace ids ${ids}`);
    assert(/already loaded/.test(await page.getByTestId("banner").innerText()), "no note about the trace id being loaded");
    const imported = await settledCount(page.locator(".link-overlay path"));
    const targets = await page.locator(".link-overlay path").evaluateAll((ps) => ps.map((p) => p.getAttribute("data-to")));
    assert(imported === hoverLinks,
      `imported trace draws ${imported} links (to ${targets.join(",")}), the live one ${hoverLinks} (to ${hoverTargets.join(",")})`);
    await page.locator('.lens [data-tab="links"]').click();
    const rows = await page.locator('.lens [data-panel="links"] .links-table tbody tr').allInnerTexts();
    assert(JSON.stringify(rows) === JSON.stringify(lensRows), "imported lens rows differ");
    await shot(page, "06-imported");
  });

  await step("importing the same file again shows the loaded copy instead of adding one", async () => {
    await page.getByLabel("session").selectOption({ index: 0 });
    await page.getByTestId("import-input").setInputFiles(join(out, "e2e-trace.jsonl"));
    await page.getByTestId("banner").filter({ hasText: "already loaded" }).waitFor();
    assert((await page.getByLabel("session").locator("option").count()) === 2, "a second copy was added");
    assert((await page.getByLabel("session").inputValue()) === "1", "the loaded copy is not shown");
  });

  await step("a malformed import shows a clear message and keeps what is loaded", async () => {
    const lines = exported.trim().split("\n");
    lines[3] = lines[3].slice(0, Math.floor(lines[3].length / 2));
    const bad = join(out, "e2e-malformed.jsonl");
    writeFileSync(bad, lines.join("\n"));
    await page.getByTestId("import-input").setInputFiles(bad);
    const alert = page.locator('[data-testid="banner"][role="alert"]');
    await alert.waitFor();
    const msg = await alert.innerText();
    assert(/line 4/.test(msg) && /not valid JSON/.test(msg), `message was: ${msg}`);
    assert((await page.getByLabel("session").locator("option").count()) === 2, "a session was added or lost");
    const texts = await page.locator(".msg-assistant .tokens.output .tok").allInnerTexts();
    assert(JSON.stringify(texts) === JSON.stringify(outputTexts), "loaded trace changed after a bad import");
    await shot(page, "07-malformed-import");
  });

  await step("regenerate, then stop mid-stream", async () => {
    await page.getByLabel("session").selectOption({ index: 0 });
    await page.getByLabel("max tokens").fill("400");
    await page.getByRole("button", { name: "Regenerate" }).click();
    const toks = page.locator(".msg-assistant .tokens.output .tok");
    await page.waitForFunction(() => document.querySelectorAll(".msg-assistant .tokens.output .tok").length >= 3 && document.querySelector('[data-hud="status"]')?.textContent === "streaming", null, { timeout: 120_000 });
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator('[data-hud="status"]').filter({ hasText: "stopped" }).waitFor({ timeout: 30_000 });
    const n = await toks.count();
    assert(n >= 3 && n < 400, `stopped run has ${n} tokens`);
    assert((await page.locator(".msg-assistant").count()) === 1, "the regenerated answer did not replace the old one");
    const runs = await page.evaluate(() => window.__attentionExplorer.session().runs.size);
    assert(runs === 2, `live session has ${runs} runs (the old one must stay in the trace)`);
    await shot(page, "08-regenerate-stopped");
  });

  const waitEnd = () =>
    page.waitForFunction(() => ["done", "truncated", "error", "stopped"].includes(document.querySelector('[data-hud="status"]')?.textContent ?? ""), null, { timeout: 180_000 });

  await step("a reply cut off by max_tokens is labelled truncated", async () => {
    await page.getByRole("button", { name: "New chat" }).click();
    await page.getByLabel("max tokens").fill("3");
    await page.getByLabel("message").fill("Write a long story about a dragon.");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator(".msg-assistant").waitFor();
    await waitEnd();
    const hud = await page.locator('[data-hud="status"]').innerText();
    const head = (await page.getByTestId("run-status").textContent()).trim();
    const finish = await page.evaluate(() => window.__attentionExplorer.session().latestRun().metrics.finishReason);
    assert(finish === "length" && hud === "truncated" && head === "truncated", `finish ${finish}, HUD ${hud}, header ${head}`);
  });

  const LONG = Array.from({ length: 14 }, (_, i) => `Item ${i + 1}: ${["apple", "river", "cloud", "stone", "violin", "garden", "rocket"][i % 7]}`).join("\n") + "\nWhich item comes after the cloud?";
  let promptLen = 0;
  await step("per-head capture, logit lens and alternatives on a long prompt", async () => {
    await page.getByRole("button", { name: "New chat" }).click();
    await page.getByLabel("system prompt", { exact: true }).fill("");
    await page.getByLabel("mask system prompt", { exact: true }).uncheck();
    await page.getByText("include prompt attention").click(); // off again
    await page.getByLabel("per-head capture").check();
    await page.getByLabel("logit lens").check();
    await page.getByLabel("top logprobs").fill("3");
    await page.getByLabel("max tokens").fill("10");
    await page.getByLabel("temperature").fill("0");
    const req = page.waitForRequest((r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST");
    await page.getByLabel("message").fill(LONG);
    await page.getByRole("button", { name: "Send" }).click();
    const body = JSON.parse((await req).postData());
    assert(body.attention_capture_heads === "each" && body.return_logit_lens === true && body.top_logprobs === 3 && body.logprobs === true, `request ${JSON.stringify(body).slice(0, 300)}`);
    await waitEnd();
    const info = await page.evaluate(() => {
      const r = window.__attentionExplorer.session().latestRun();
      return { heads: r.heads, lens: r.lens.size, lp: r.logprobs.filter(Boolean).length, toks: r.tokens.length, pl: r.promptLen };
    });
    promptLen = info.pl;
    assert(info.heads.length >= 2 && info.lens === info.toks && info.lp === info.toks, `run ${JSON.stringify(info)}`);
  });

  await step("arcs reach targets inside the scrolled prompt box, and follow its scrolling", async () => {
    const box = page.locator(".msg-assistant .tokens.prompt");
    const scrollable = await box.evaluate((el) => el.scrollHeight > el.clientHeight + 20);
    assert(scrollable, "the prompt box does not scroll: the test needs a longer prompt");
    await page.locator(".msg-assistant .tokens.prompt").evaluate((el) => (el.scrollTop = 0));
    await hoverToken(page, page.locator(".msg-assistant .tokens.output .tok").nth(4));
    await page.locator(".link-overlay path").first().waitFor();
    // each arc ends on its target when the target is visible in the prompt box, else at the box's edge (dashed)
    const check = () =>
      page.evaluate(() => {
        const svg = document.querySelector(".msg-assistant .link-overlay");
        const base = svg.getBoundingClientRect();
        const clip = document.querySelector(".msg-assistant .tokens.prompt").getBoundingClientRect();
        const out = { prompt: 0, visible: 0, hidden: 0, bad: [] };
        for (const p of svg.querySelectorAll("path")) {
          const to = p.getAttribute("data-to");
          const el = document.querySelector(`.msg-assistant .tokens.prompt [data-pos="${to}"]`);
          if (!el) continue;
          out.prompt++;
          const nums = p.getAttribute("d").trim().split(/[ ,]+/).filter((x) => /^-?[\d.]+$/.test(x)).map(Number);
          const ex = nums[nums.length - 2] + base.left;
          const ey = nums[nums.length - 1] + base.top;
          const r = el.getBoundingClientRect();
          const visible = r.bottom > clip.top + 1 && r.top < clip.bottom - 1;
          if (visible) {
            out.visible++;
            // the end is the top centre of the target (clamped to the box when it is partly scrolled out),
            // and the token really drawn there is the target (checked for one-line tokens fully in view)
            const wantY = Math.max(r.top + 2, clip.top);
            const oneLine = el.getClientRects().length === 1 && r.top >= clip.top && r.bottom <= clip.bottom;
            const hit = oneLine ? document.elementsFromPoint(ex, ey + 4).find((e) => e.matches?.(".tok")) : null;
            if (p.hasAttribute("data-offscreen") || Math.abs(ey - wantY) > 1.5 || ex < r.left - 1 || ex > r.right + 1 || (oneLine && hit?.getAttribute("data-pos") !== to)) out.bad.push(`${to}: visible, end (${ex.toFixed(0)},${ey.toFixed(0)}) hit ${hit?.getAttribute("data-pos")}`);
          } else {
            out.hidden++;
            const edge = r.bottom <= clip.top + 1 ? clip.top : clip.bottom;
            if (!p.hasAttribute("data-offscreen") || Math.abs(ey - edge) > 1.5) out.bad.push(`${to}: hidden, end y ${ey.toFixed(0)} vs edge ${edge.toFixed(0)}`);
          }
        }
        return out;
      });
    const top = await check();
    assert(top.prompt >= 5 && top.bad.length === 0, `scrolled to top: ${JSON.stringify(top)}`);
    await shot(page, "09-arcs-prompt-top");
    const tick0 = Number(await page.locator(".msg-assistant .link-overlay").getAttribute("data-tick"));
    await page.locator(".msg-assistant .tokens.prompt").evaluate((el) => (el.scrollTop = el.scrollHeight));
    await page.waitForFunction((t) => Number(document.querySelector(".msg-assistant .link-overlay").getAttribute("data-tick")) > t, tick0);
    const bottom = await check();
    assert(bottom.bad.length === 0 && bottom.prompt === top.prompt, `scrolled to bottom: ${JSON.stringify(bottom)}`);
    assert(top.hidden + bottom.hidden > 0 && top.visible + bottom.visible > 0, `no arc crossed the scroll edge: ${JSON.stringify({ top, bottom })}`);
    console.log(`# prompt arcs: top ${top.visible} visible/${top.hidden} at the edge; bottom ${bottom.visible}/${bottom.hidden}`);
  });

  await step("head grid: layers x heads for the pinned token; a click focuses that head in the arcs and Links", async () => {
    const tok = page.locator(".msg-assistant .tokens.output .tok").nth(4);
    const pos = Number(await tok.getAttribute("data-pos"));
    await tok.click();
    await page.locator(".lens .badge", { hasText: "pinned" }).waitFor();
    await page.locator('.lens [data-tab="heads"]').click();
    const grid = page.getByTestId("head-grid");
    await grid.waitFor();
    const nHeads = await page.evaluate(() => window.__attentionExplorer.session().latestRun().heads.length);
    const cells = await grid.locator(".head-cell").count();
    assert(cells === nHeads * Number(await grid.getAttribute("data-layers")), `${cells} cells for ${nHeads} heads`);
    const cell = grid.locator('.head-cell[data-head="3"]').first();
    const layer = Number(await cell.getAttribute("data-layer"));
    await cell.click();
    await page.locator(".head-cell.active").waitFor();
    await shot(page, "10-head-grid");
    const want = await page.evaluate(
      ([pos, layer]) => {
        const r = window.__attentionExplorer.session().latestRun();
        const e = r.steps.get(pos - r.promptLen).heads.find((h) => h.layer_id === layer && h.head_id === 3);
        return e.token_positions.filter((p) => p !== pos).map(String).sort();
      },
      [pos, layer],
    );
    await page.waitForFunction((n) => document.querySelectorAll(".msg-assistant .link-overlay path").length === n, want.length);
    const drawn = (await page.locator(".msg-assistant .link-overlay path").evaluateAll((ps) => ps.map((p) => p.getAttribute("data-to")))).sort();
    assert(JSON.stringify(drawn) === JSON.stringify(want), `arcs ${drawn} vs head 3 ${want}`);
    await page.locator('.lens [data-tab="links"]').click();
    const h4 = await page.locator('.lens [data-panel="links"] h4').first().innerText();
    assert(/head 3/.test(h4), `Links header: ${h4}`);
    await page.locator('.lens [data-tab="heads"]').click();
    await page.locator(".head-cell.active").click(); // back to the head mean
    await page.locator(".head-cell.active").waitFor({ state: "detached" });
  });

  await step("logit lens tab: layers x top tokens, the produced token highlighted; next-token alternatives", async () => {
    await page.locator('.lens [data-tab="lens"]').click();
    const table = page.getByTestId("lens-table");
    await table.waitFor();
    const info = await page.evaluate(() => {
      const s = window.__attentionExplorer.session();
      const r = s.latestRun();
      return { pinnedStep: null, lensLayers: [...r.lens.values()][0].length };
    });
    const rows = await table.locator("tbody tr").count();
    assert(rows === info.lensLayers, `${rows} lens rows, ${info.lensLayers} layers`);
    // temperature 0: the last layer's top token is the produced one
    const last = table.locator("tbody tr").last();
    assert((await last.locator(".lens-chip").first().getAttribute("class")).includes("produced"), "produced token not highlighted in the last layer");
    await page.getByTestId("lens-first-layer").waitFor();
    const alts = page.getByTestId("alternatives");
    assert((await alts.locator("tbody tr").count()) === 3, "alternatives rows");
    assert((await alts.locator("tr.produced").count()) === 1, "sampled token not marked");
    await shot(page, "11-logit-lens");
  });

  await step("keyboard: Tab to the tokens, arrows move the lens, Enter pins, Escape closes; the lens neither reflows the chat nor covers the banner", async () => {
    await page.keyboard.press("Escape");
    await page.locator(".lens.open").waitFor({ state: "detached" });
    const tok = page.locator(".msg-assistant .tokens.output .tok").nth(2);
    const before = await tok.boundingBox();
    await hoverToken(page, tok);
    await page.locator(".lens.open").waitFor();
    const after = await tok.boundingBox();
    assert(Math.abs(before.x - after.x) < 0.5 && Math.abs(before.y - after.y) < 0.5, `token moved when the lens opened: ${JSON.stringify([before, after])}`);
    await page.mouse.move(1, 1);
    await page.keyboard.press("Escape");
    await page.locator(".lens.open").waitFor({ state: "detached" });
    // keyboard only: from the message box, Shift+Tab back to the token box
    await page.getByLabel("message").focus();
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press("Shift+Tab");
      if (await page.evaluate(() => document.activeElement?.classList.contains("run-tokens"))) break;
    }
    assert(await page.evaluate(() => document.activeElement?.classList.contains("run-tokens")), `focus is on ${await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 80))}`);
    await page.keyboard.press("End");
    await page.keyboard.press("ArrowLeft");
    const box = page.locator(".msg-assistant .run-tokens");
    const last = await page.locator(".msg-assistant .tokens.output .tok").last().getAttribute("data-pos");
    assert(Number(await box.getAttribute("data-focus-pos")) === Number(last) - 1, `keys moved to ${await box.getAttribute("data-focus-pos")}, last ${last}`);
    await page.locator(".lens.open").waitFor();
    await page.keyboard.press("Enter");
    await page.locator(".lens .badge", { hasText: "pinned" }).waitFor();
    await page.keyboard.press("ArrowLeft");
    assert(Number(await page.locator(".tok.pinned").getAttribute("data-pos")) === Number(last) - 2, "the pin did not follow the arrow key");
    await shot(page, "12-keyboard");
    // a banner's close button stays reachable with the lens open
    await page.getByRole("button", { name: "Save", exact: true }).click();
    const dismiss = page.getByTestId("banner").getByRole("button", { name: "dismiss" });
    await dismiss.waitFor();
    const b = await dismiss.boundingBox();
    const hit = await page.evaluate(([x, y]) => document.elementFromPoint(x, y)?.getAttribute("aria-label"), [b.x + b.width / 2, b.y + b.height / 2]);
    assert(hit === "dismiss", `the banner's close button is covered by ${hit}`);
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await page.getByTestId("banner").filter({ hasText: "Updated saved" }).waitFor();
    await page.locator('[data-view="saved"]').click();
    const rows = await page.locator(".saved-table tbody tr").count();
    assert(rows === 1, `saving twice left ${rows} saved rows`);
    await page.locator('[data-view="chat"]').click();
    await page.locator(".run-tokens").first().focus();
    await page.keyboard.press("Escape");
    await page.locator(".lens.open").waitFor({ state: "detached" });
  });

  await step("attention map: dense replay of the run, zoom and pan, who attends to a token", async () => {
    await page.locator('[data-view="map"]').click();
    const status = page.getByTestId("map-status");
    await status.filter({ hasText: "×" }).waitFor({ timeout: 60_000 });
    const T = Number(await status.getAttribute("data-t"));
    const ids = await page.evaluate(() => {
      const r = window.__attentionExplorer.session().latestRun();
      return [...r.promptTokens.map((t) => t.id), ...r.tokens.map((t) => t.id)];
    });
    assert(T === ids.length && T === promptLen + 10, `map is ${T} x ${T}, the run has ${ids.length} tokens`);
    const canvas = page.getByTestId("map-canvas");
    const cb = await canvas.boundingBox();
    const draws0 = Number(await canvas.getAttribute("data-draws"));
    await page.mouse.move(cb.x + cb.width * 0.4, cb.y + cb.height * 0.5);
    for (let i = 0; i < 5; i++) await page.mouse.wheel(0, -240);
    await page.mouse.down();
    await page.mouse.move(cb.x + cb.width * 0.4 + 60, cb.y + cb.height * 0.5 + 40, { steps: 6 });
    await page.mouse.up();
    await page.waitForFunction((d) => Number(document.querySelector('[data-testid="map-canvas"]').dataset.draws) > d + 5, draws0);
    await page.getByRole("button", { name: "Fit" }).click();
    // click the cell (query q, key k) and compare the reverse list with a replay fetched here
    const q = T - 2;
    const k = promptLen - 3;
    const hit = await page.evaluate(([q, k]) => {
      const c = document.querySelector('[data-testid="map-canvas"]');
      const r = c.getBoundingClientRect();
      const w = c.clientWidth, h = c.clientHeight;
      const s = Math.min((w - 96 - 8), (h - 64 - 8));
      return [r.left + 96 + ((k + 0.5) * s) / Number(document.querySelector('[data-testid="map-status"]').dataset.t), r.top + 64 + ((q + 0.5) * s) / Number(document.querySelector('[data-testid="map-status"]').dataset.t)];
    }, [q, k]);
    await page.mouse.click(hit[0], hit[1]);
    const att = page.getByTestId("map-attenders");
    await att.waitFor();
    const layer = Number(await page.getByLabel("map layer").inputValue());
    const res = await fetch(`${server.url}/v1/attention/replay`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input_ids: ids, layers: [layer], heads: "mean", format: "base64" }) }).then((r) => r.json());
    const buf = Buffer.from(res.data, "base64");
    const f16 = (h) => { const e = (h >> 10) & 31, f = h & 1023, sg = h & 0x8000 ? -1 : 1; return e === 0 ? sg * 2 ** -14 * (f / 1024) : sg * 2 ** (e - 15) * (1 + f / 1024); };
    const col = [];
    for (let i = k; i < T; i++) col.push(f16(buf.readUInt16LE((i * T + k) * 2)));
    const top = Math.max(...col);
    const rows = await att.locator("tr td:nth-child(3)").allInnerTexts();
    const shown = rows.map((t) => parseFloat(t) / 100);
    assert(Math.abs(shown[0] - top) < 0.0006, `top attender ${shown[0]} vs replay ${top}`);
    assert(shown.every((v, i) => i === 0 || shown[i - 1] >= v), `attenders not sorted: ${shown}`);
    const h4 = await page.getByTestId("map-details").locator("h4").first().textContent();
    assert(h4.includes(`key ${k} `), `reverse list is not for the clicked key ${k}: ${h4}`);
    console.log(`# attention map ${T}x${T}: fetch ${await status.getAttribute("data-fetch-ms")} ms, paint ${await status.getAttribute("data-paint-ms")} ms`);
    await shot(page, "13-attention-map");
    await page.locator('[data-view="chat"]').click();
  });
} catch {
  /* reported above */
} finally {
  await browser?.close();
  await ui?.stop();
  if (runner.failed && server?.log) writeFileSync(join(out, "e2e-server.log"), server.log());
  await server?.stop();
  if (!runner.failed && process.argv.includes("--docs")) {
    // screenshots for docs/dashboard.md
    const docs = join(UI_DIR, "docs/screenshots");
    mkdirSync(docs, { recursive: true });
    for (const f of readdirSync(out).filter((f) => /^e2e-\d\d-.*\.png$/.test(f))) copyFileSync(join(out, f), join(docs, f));
  }
  writeFileSync(join(out, "e2e-results.json"), JSON.stringify(results, null, 1));
  const passed = results.filter((r) => r.ok).length;
  console.log(`${passed} passed, ${runner.failed} failed`);
  process.exit(runner.failed ? 1 : 0);
}
