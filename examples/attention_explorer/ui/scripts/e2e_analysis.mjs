// End-to-end test of the issue-8 views in headless Chromium against a real server and a real
// attention_sidecar whose discovery artifacts come from fingerprints of the default model:
// save two runs (IndexedDB, survives a reload, rename), see them on the Manifold (sidecar map,
// click loads a saved session), Compare them (score, histograms, PCA), apply a Router
// recommendation and find it in the next request's body, and stream a reply with attention
// links in the legacy explorer.html. Screenshots go to test-results/ (docs copies: --docs).
//
//   npm run test:e2e:analysis        (part of npm run test:e2e)
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { freePort, launchBrowser, REPO, resultsDir, startServer, startUi, UI_DIR, assert, stepRunner } from "./lib.mjs";
import { runDiscovery, seedFingerprints, startSidecar } from "./sidecar_setup.mjs";

const runner = stepRunner();
const { results, step } = runner;

const out = resultsDir();
const shots = [];
const shot = async (page, name) => {
  const p = join(out, `e2e8-${name}.png`);
  await page.screenshot({ path: p, fullPage: false });
  shots.push(p);
};
// The fingerprints must reach this test's sidecar, so the server is always our own.
delete process.env.E2E_SERVER_URL;

let sidecar, server, ui, browser, page, explorerHttp;
let discovery;
const requests = [];
try {
  await step("start sidecar, server (pushing fingerprints to it), UI and browser", async () => {
    sidecar = await startSidecar();
    [server, ui] = await Promise.all([startServer(["--attention-sidecar-url", sidecar.zmq]), startUi()]);
    browser = await launchBrowser();
    page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
    page.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
    page.on("request", (r) => {
      if (r.url().endsWith("/v1/chat/completions") && r.method() === "POST") requests.push(r.postDataJSON());
    });
  });

  await step("fingerprints of the default model -> SQLite -> discovery -> sidecar reload", async () => {
    const steps = await seedFingerprints(server.url);
    discovery = await runDiscovery(sidecar, 50);
    console.log(`# ${steps} fingerprint entries returned, ${discovery.stored} stored, discovery: ${discovery.n_points} points, ${discovery.n_clusters} clusters`);
    assert(discovery.stored >= 50, `sidecar stored only ${discovery.stored} fingerprints`);
    assert(discovery.n_clusters >= 1, "discovery found no cluster");
    const st = await fetch(`${sidecar.url}/discovery/status`).then((r) => r.json());
    assert(st.loaded && st.current.run_id === discovery.run_id, `sidecar did not load run ${discovery.run_id}`);
  });

  const goto = () => page.goto(`${ui.url}/?server=${encodeURIComponent(server.url)}&sidecar=${encodeURIComponent(sidecar.url)}`);
  await step("dashboard connects to the server and the sidecar", async () => {
    await goto();
    await page.getByTestId("connection").filter({ hasText: /connected/ }).waitFor({ timeout: 30_000 });
    await page.getByTestId("sidecar-connection").filter({ hasText: `run ${discovery.run_id}` }).waitFor({ timeout: 30_000 });
  });

  const runPrompt = async (text) => {
    const before = await page.locator(".msg-assistant").count();
    await page.getByLabel("message").fill(text);
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.locator(".msg-assistant").nth(before).waitFor();
    await page.waitForFunction(() => ["done", "error", "stopped"].includes(document.querySelector('[data-hud="status"]')?.textContent ?? ""), null, { timeout: 180_000 });
    const status = await page.locator('[data-hud="status"]').innerText();
    assert(status === "done", `run ended ${status}`);
  };

  await step("run 1 (raw capture) and save it", async () => {
    await page.getByLabel("max tokens").fill("24");
    await page.getByLabel("temperature").fill("0");
    await runPrompt("List five fruits, one per line.");
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await page.getByTestId("banner").filter({ hasText: "Saved" }).waitFor();
    await shot(page, "01-chat-saved");
  });

  await step("run 2 in a new chat (sketch capture) and save it", async () => {
    await page.getByRole("button", { name: "New chat" }).click();
    await page.getByLabel("capture mode").selectOption("sketch");
    await runPrompt("Tell me about the history of Rome in a few sentences.");
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await page.getByTestId("banner").filter({ hasText: "Saved" }).waitFor();
  });

  await step("saved sessions survive a reload; rename one", async () => {
    await goto();
    await page.locator('[data-view="saved"]').click();
    const rows = page.locator(".saved-table tbody tr");
    await rows.nth(1).waitFor();
    assert((await rows.count()) === 2, `${await rows.count()} saved rows`);
    await rows.nth(1).getByRole("button", { name: "Rename" }).click();
    await page.getByLabel("new name").fill("fruits run");
    await page.getByRole("button", { name: "OK" }).click();
    await page.locator(".saved-name", { hasText: "fruits run" }).waitFor();
    await goto();
    await page.locator('[data-view="saved"]').click();
    await page.locator(".saved-name", { hasText: "fruits run" }).waitFor();
    await shot(page, "02-saved");
  });

  const mapCount = async () => Number((await page.getByTestId("manifold-count").innerText()).replace(/[^0-9]/g, "") || 0);
  const waitMap = async (pred, what) => {
    await page.waitForFunction(
      ([p]) => {
        const el = document.querySelector('[data-testid="manifold-count"]');
        return el && !el.textContent.includes("updating") && new Function("n", `return ${p}`)(Number(el.textContent.replace(/[^0-9]/g, "") || 0));
      },
      [pred],
      { timeout: 30_000 },
    ).catch(async () => {
      throw new Error(`map: ${what}; shows ${await page.getByTestId("manifold-count").innerText()}`);
    });
  };

  await step("Manifold: saved sessions on the sidecar map; a click loads one", async () => {
    await page.getByRole("button", { name: "Settings" }).click(); // hide the panel: more room for the views
    await page.locator('[data-view="manifold"]').click();
    await page.getByLabel("manifold scope").selectOption("saved");
    await waitMap("n === 2", "two saved sessions");
    const proj = await page.getByTestId("manifold-projection").getAttribute("data-projection");
    assert(proj === "sidecar", `points placed by ${proj}, not the sidecar`);
    await page.waitForTimeout(300);
    // screen position of point 0 from the renderer's own transform
    const [sx, sy] = await page.evaluate(() => {
      const c = window.__manifold.cloud();
      return c.toScreen(c["data"].x[0], c["data"].y[0]);
    });
    const box = await page.getByTestId("manifold-canvas").boundingBox();
    await page.mouse.click(box.x + sx, box.y + sy);
    const details = page.getByTestId("manifold-details");
    await details.locator("h3").waitFor();
    const savedId = await details.getAttribute("data-saved-id");
    assert(savedId, "clicked point is not a saved session");
    const selected = await page.getByLabel("session").locator("option:checked").innerText();
    assert(/^Saved: /.test(selected), `session selector shows ${selected}`);
    await shot(page, "03-manifold-saved");
  });

  await step("Manifold: session steps and all scopes (discovery clusters)", async () => {
    await page.getByLabel("manifold scope").selectOption("session");
    await waitMap("n > 5", "steps of the opened session");
    await shot(page, "04-manifold-session");
    await page.getByLabel("manifold scope").selectOption("all");
    const clusters = discovery.n_clusters;
    await waitMap(`n > ${clusters + 10}`, "saved steps and discovery clusters");
    await page.waitForTimeout(300);
    await shot(page, "05-manifold-all");
  });

  let pcaNames = [];
  await step("Compare: score with formula, differences, metrics, overlaid histograms, PCA", async () => {
    await page.locator('[data-view="compare"]').click();
    const score = Number(await page.getByTestId("compare-score").getAttribute("data-score"));
    assert(score > 0 && score <= 1, `score ${score}`);
    assert(/cos/.test(await page.getByTestId("compare-formula").innerText()), "formula not shown");
    assert((await page.locator('[data-testid="compare-differences"] li').count()) >= 1, "no differences listed");
    assert((await page.locator('[data-testid="compare-metrics"] tbody tr').count()) === 7, "metrics rows");
    const rects = await page.locator('[data-testid="compare-histograms"] rect').count();
    assert(rects === 32, `${rects} histogram bars (expected 2 x 16)`);
    const rows = await page.locator('[data-testid="compare-pca"] tbody tr td:nth-child(2)').allInnerTexts();
    const interp = await fetch(`${sidecar.url}/pca/interpretation`).then((r) => r.json());
    pcaNames = interp.components.slice(0, 4).map((c) => c.name);
    assert(JSON.stringify(rows) === JSON.stringify(pcaNames), `PCA rows ${rows} vs sidecar ${pcaNames}`);
    await shot(page, "06-compare");
  });

  await step("Router: zone, evidence, zones.py recommendation; Apply persists and reaches the next request", async () => {
    // the active session is the saved one the Manifold click opened: a replayed trace
    await page.locator('[data-view="router"]').click();
    const zone = await page.getByTestId("router-zone").getAttribute("data-zone");
    assert((await page.locator(".router .ev-meter").count()) === 5, "evidence meters");
    const rec = {
      temperature: Number(await page.getByTestId("rec-temperature").innerText()),
      top_p: Number(await page.getByTestId("rec-top-p").innerText()),
      capture: await page.getByTestId("rec-capture").innerText(),
    };
    const py = spawnSync(process.env.PYTHON || "python", ["-c", `import json; from sgl_kernel import zones as z; print(json.dumps({**z.SAMPLING_HINTS["${zone}"], "capture": z.CAPTURE_MODE_HINTS["${zone}"]}))`], { encoding: "utf8", cwd: REPO });
    const want = JSON.parse(py.stdout);
    assert(rec.temperature === want.temperature && rec.top_p === want.top_p && rec.capture === want.capture, `recommendation ${JSON.stringify(rec)} vs zones.py ${JSON.stringify(want)}`);
    await page.getByTestId("router-sidecar").waitFor({ timeout: 15_000 });
    await page.getByRole("button", { name: "Apply to next run" }).click();
    await page.getByTestId("pending-apply").waitFor();
    await shot(page, "07-router");
    await goto(); // persisted in localStorage
    await page.getByTestId("connection").filter({ hasText: /connected/ }).waitFor({ timeout: 30_000 });
    await page.getByTestId("pending-apply").waitFor();
    // Settings that differ from the recommendation, so the request shows which one won.
    const otherMode = ["raw", "sketch", "fingerprint"].find((m) => m !== rec.capture);
    await page.getByLabel("capture mode").selectOption(otherMode);
    await page.getByLabel("top p").fill("0.5");
    await page.getByLabel("temperature").fill(rec.temperature === 0 ? "1" : "0");
    const n = requests.length;
    await page.getByLabel("max tokens").fill("8");
    await runPrompt("Thanks!");
    const body = requests[n];
    assert(body, "no chat request seen");
    assert(body.temperature === rec.temperature && body.top_p === rec.top_p, `request sampling ${body.temperature}/${body.top_p}`);
    assert(body.attention_fingerprint_mode === (rec.capture === "fingerprint") && body.attention_sketch_mode === (rec.capture === "sketch"), `request capture fields ${body.attention_fingerprint_mode}/${body.attention_sketch_mode}`);
    await page.getByTestId("banner").filter({ hasText: "Router settings" }).waitFor();
    assert((await page.getByTestId("pending-apply").count()) === 0, "the recommendation was not used up");
    // one request only: the stored settings are unchanged, and the request after uses them
    assert((await page.getByLabel("capture mode").inputValue()) === otherMode, "stored capture mode changed");
    await runPrompt("Bye!");
    const after = requests[requests.length - 1];
    assert(after.top_p === 0.5 && after.attention_sketch_mode === (otherMode === "sketch") && after.attention_fingerprint_mode === (otherMode === "fingerprint"), `second request ${JSON.stringify({ top_p: after.top_p, s: after.attention_sketch_mode, f: after.attention_fingerprint_mode })}`);
    await shot(page, "08-router-applied");
  });

  await step("legacy explorer.html streams a reply with attention links", async () => {
    const port = await freePort();
    const dir = resolve(UI_DIR, "..");
    explorerHttp = spawn(process.env.PYTHON || "python", ["-m", "http.server", String(port), "--bind", "127.0.0.1"], { cwd: dir, stdio: "ignore" });
    const t0 = Date.now();
    while (!(await fetch(`http://127.0.0.1:${port}/explorer.html`).then((r) => r.ok).catch(() => false))) {
      if (Date.now() - t0 > 20_000) throw new Error("python -m http.server did not start");
      await new Promise((r) => setTimeout(r, 200));
    }
    const p2 = await browser.ctx.newPage();
    p2.on("pageerror", (e) => console.log(`# explorer page error: ${e.message}`));
    await p2.goto(`http://127.0.0.1:${port}/explorer.html?apiBase=${encodeURIComponent(server.url)}`);
    await p2.locator("#prompt").fill("Name three animals.");
    await p2.locator("#send").click();
    await p2.waitForFunction(() => document.querySelector("#status")?.textContent?.startsWith("done"), null, { timeout: 180_000 });
    const toks = p2.locator("#output .tok");
    assert((await toks.count()) >= 3, "too few tokens");
    await toks.nth(2).hover();
    await p2.locator("#links path").first().waitFor({ timeout: 5000 });
    const rows = await p2.locator("#lens tbody tr").count();
    assert(rows >= 3, `${rows} link rows`);
    const pct = (await p2.locator("#lens tbody tr td:nth-child(3)").allInnerTexts()).map((t) => parseFloat(t));
    const sum = pct.reduce((a, b) => a + b, 0);
    assert(sum > 0 && sum <= 100.5, `true probabilities sum to ${sum}%`);
    await shot(p2, "09-explorer");
    await p2.close();
  });
} catch {
  /* reported above */
} finally {
  await browser?.close();
  await ui?.stop();
  explorerHttp?.kill("SIGTERM");
  if (runner.failed && server?.log) writeFileSync(join(out, "e2e8-server.log"), server.log());
  if (runner.failed && sidecar?.log) writeFileSync(join(out, "e2e8-sidecar.log"), sidecar.log());
  await server?.stop();
  await sidecar?.stop();
  if (!runner.failed && process.argv.includes("--docs")) {
    const docs = join(UI_DIR, "docs/screenshots");
    mkdirSync(docs, { recursive: true });
    for (const p of shots) copyFileSync(p, join(docs, p.split("/").pop()));
    console.log(`# copied ${shots.length} screenshots to ${docs}`);
  }
  writeFileSync(join(out, "e2e8-results.json"), JSON.stringify(results, null, 1));
  const passed = results.filter((r) => r.ok).length;
  console.log(`${passed} passed, ${runner.failed} failed`);
  process.exit(runner.failed ? 1 : 0);
}
