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
    assert(status === "done", `run status is ${status}: ${await page.locator(".msg-assistant .error").allInnerTexts()}`);
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
    const imported = await settledCount(page.locator(".link-overlay path"));
    const targets = await page.locator(".link-overlay path").evaluateAll((ps) => ps.map((p) => p.getAttribute("data-to")));
    assert(imported === hoverLinks,
      `imported trace draws ${imported} links (to ${targets.join(",")}), the live one ${hoverLinks} (to ${hoverTargets.join(",")})`);
    await page.locator('.lens [data-tab="links"]').click();
    const rows = await page.locator('.lens [data-panel="links"] .links-table tbody tr').allInnerTexts();
    assert(JSON.stringify(rows) === JSON.stringify(lensRows), "imported lens rows differ");
    await shot(page, "06-imported");
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
