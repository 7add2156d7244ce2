// End-to-end test of the issue-8 views in headless Chromium against a real server and a real
// attention_sidecar whose discovery artifacts come from fingerprints of the default model:
// save two runs (IndexedDB, survives a reload, rename), see them on the Manifold (sidecar map,
// click loads a saved session, "all" draws every discovery point), Compare them (score,
// histograms, PCA), apply a Router recommendation and find it in the next request's body, run
// with adaptive sampling (the server reads the sidecar's clusters) and check the Router's
// adaptive-sampling and sidecar-cluster lines against the sidecar, and stream a reply with
// attention links in the legacy explorer.html. Screenshots go to test-results/ (docs copies: --docs).
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

// Consecutive fingerprint steps in one cluster before the server switches sampling (its default is 8).
const ADAPTIVE_STEPS = 2;
// What the Manifold asks of /discovery/points (src/api/sidecar.ts DISCOVERY_POINTS_LIMIT).
const DISCOVERY_POINTS_LIMIT = 100_000;

let sidecar, server, ui, browser, page, explorerHttp;
let discovery;
const requests = [];
try {
  await step("start sidecar, server (pushing fingerprints to it), UI and browser", async () => {
    sidecar = await startSidecar();
    // The server also reads the sidecar's clusters (manifold hints, refreshed every second) for
    // adaptive sampling; until discovery has run there are none, and nothing adapts.
    const hints = ["--attention-hints-url", sidecar.url, "--attention-hints-refresh-interval", "1", "--attention-adaptive-steps", String(ADAPTIVE_STEPS)];
    [server, ui] = await Promise.all([startServer(["--attention-sidecar-url", sidecar.zmq, ...hints]), startUi()]);
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
    await page.waitForFunction(() => ["done", "truncated", "error", "stopped"].includes(document.querySelector('[data-hud="status"]')?.textContent ?? ""), null, { timeout: 180_000 });
    const status = await page.locator('[data-hud="status"]').innerText();
    // "truncated": the reply hit max_tokens (finish_reason "length")
    assert(status === "done" || status === "truncated", `run ended ${status}`);
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
    // this save's own banner (run 1's "Saved …" may still show): the reload below must not
    // race the IndexedDB write
    await page.getByTestId("banner").filter({ hasText: "Saved “Tell me about the history" }).waitFor();
    // saving again updates that copy (the reload step below counts two saved rows)
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await page.getByTestId("banner").filter({ hasText: "Updated saved “Tell me about the history" }).waitFor();
    // "recent" draws the live chat's steps once, not again as its own saved copy
    await page.locator('[data-view="manifold"]').click();
    await page.getByLabel("manifold scope").selectOption("recent");
    const [live, earlier] = await page.evaluate(() => window.__attentionExplorer.sessions().slice(0, 2).map((x) => [...x.runs.values()].reduce((n, r) => n + r.steps.size, 0)));
    await page
      .waitForFunction((n) => { const el = document.querySelector('[data-testid="manifold-count"]'); return el && !el.textContent.includes("updating") && Number(el.getAttribute("data-points")) === n; }, live + earlier, { timeout: 30_000 })
      .catch(async () => {
        throw new Error(`recent shows ${await page.getByTestId("manifold-count").getAttribute("data-points")} points, want ${live} live + ${earlier} saved (run 1)`);
      });
    await page.locator('[data-view="chat"]').click();
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

  // points in the map's current set (data-points; the text also counts the discovery points)
  const mapCount = async () => Number((await page.getByTestId("manifold-count").getAttribute("data-points")) || 0);
  const waitMap = async (pred, what) => {
    await page.waitForFunction(
      ([p]) => {
        const el = document.querySelector('[data-testid="manifold-count"]');
        return el && !el.textContent.includes("updating") && new Function("n", `return ${p}`)(Number(el.getAttribute("data-points") || 0));
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
    // the saved session's sink mass, shown as its own quantity next to the fingerprint's masses
    const sinkRow = await details.getByTestId("details-sink-mass").innerText();
    assert(/sink mass.*\d+(\.\d)?%/.test(sinkRow), `no sink mass in the details: ${sinkRow}`);
    // the server's default fingerprint version is 2: the saved session's mean is read sink-aware
    const detailsVersion = await details.getByTestId("details-version").getAttribute("data-version");
    assert(detailsVersion === "2", `details read the point as fingerprint v${detailsVersion}, expected v2`);
    const selected = await page.getByLabel("session").locator("option:checked").innerText();
    assert(/^Saved: /.test(selected), `session selector shows ${selected}`);
    await shot(page, "03-manifold-saved");
  });

  await step("Manifold: session steps and all scopes (every discovery point, clusters)", async () => {
    await page.getByLabel("manifold scope").selectOption("session");
    await waitMap("n > 5", "steps of the opened session");
    await shot(page, "04-manifold-session");
    const sessionSteps = await mapCount();
    const pts = await fetch(`${sidecar.url}/discovery/points?limit=0`).then((r) => r.json());
    assert(pts.run_id === discovery.run_id && pts.total === discovery.n_points, `/discovery/points: run ${pts.run_id}, ${pts.total} points; discovery: run ${discovery.run_id}, ${discovery.n_points}`);
    const want = Math.min(pts.total, DISCOVERY_POINTS_LIMIT);
    await page.getByLabel("manifold scope").selectOption("all");
    const clusters = discovery.n_clusters;
    await waitMap(`n >= ${want + clusters + sessionSteps}`, `${want} discovery points, saved steps and ${clusters} clusters`);
    const count = page.getByTestId("manifold-count");
    const drawnAttr = Number(await count.getAttribute("data-discovery-points"));
    const totalAttr = Number(await count.getAttribute("data-discovery-total"));
    assert(drawnAttr === want && totalAttr === pts.total, `map has ${drawnAttr} discovery points (sidecar total ${totalAttr}), expected ${want} of ${pts.total}`);
    await page.waitForTimeout(300);
    const stats = await page.evaluate(() => window.__manifold.stats());
    assert(stats.discoveryPoints === want && stats.projection === "sidecar", `stats ${JSON.stringify({ d: stats.discoveryPoints, p: stats.projection })}`);
    // after Fit every point is inside the canvas: the renderer drew all of them
    assert(stats.drawn === stats.points && stats.points >= want + clusters, `drew ${stats.drawn} of ${stats.points} points`);
    // the discovery points sit exactly where the sidecar put them (the first few, by the renderer's data)
    const page0 = await fetch(`${sidecar.url}/discovery/points?limit=5`).then((r) => r.json());
    const xy = await page.evaluate(() => {
      const c = window.__manifold.cloud();
      return [Array.from(c["data"].x.slice(0, 5)), Array.from(c["data"].y.slice(0, 5))];
    });
    const f32 = (v) => Math.fround(v);
    assert(JSON.stringify(xy[0]) === JSON.stringify(page0.x.map(f32)) && JSON.stringify(xy[1]) === JSON.stringify(page0.y.map(f32)), `map ${JSON.stringify(xy)} vs sidecar ${JSON.stringify([page0.x, page0.y])}`);
    await shot(page, "05-manifold-all");
  });

  let pcaNames = [];
  await step("Compare: score with formula, differences, metrics, overlaid histograms, PCA", async () => {
    await page.locator('[data-view="compare"]').click();
    const score = Number(await page.getByTestId("compare-score").getAttribute("data-score"));
    assert(score > 0 && score <= 1, `score ${score}`);
    assert(/cos/.test(await page.getByTestId("compare-formula").innerText()), "formula not shown");
    assert((await page.locator('[data-testid="compare-differences"] li').count()) >= 1, "no differences listed");
    // 7 rows, plus the server's sink mass as its own row (both runs carry sink_mass)
    const sinkRows = await page.locator('[data-testid="compare-metrics"] tbody tr', { hasText: "sink mass" }).count();
    assert(sinkRows === 1 && (await page.locator('[data-testid="compare-metrics"] tbody tr').count()) === 8, "metrics rows");
    const rects = await page.locator('[data-testid="compare-histograms"] rect').count();
    assert(rects === 32, `${rects} histogram bars (expected 2 x 16)`);
    const rows = await page.locator('[data-testid="compare-pca"] tbody tr td:nth-child(2)').allInnerTexts();
    const interp = await fetch(`${sidecar.url}/pca/interpretation`).then((r) => r.json());
    pcaNames = interp.components.slice(0, 4).map((c) => c.name);
    assert(JSON.stringify(rows) === JSON.stringify(pcaNames), `PCA rows ${rows} vs sidecar ${pcaNames}`);
    // both saved runs came from the default (version-2) server: their digests are sink-aware, and the text says so
    const measured = page.getByTestId("compare-measured");
    const va = await measured.getAttribute("data-version-a");
    const vb = await measured.getAttribute("data-version-b");
    assert(va === "2" && vb === "2", `Compare reads A as v${va}, B as v${vb}`);
    assert(/sink-aware: position 0 left out/.test(await measured.innerText()), "Compare does not say what was measured");
    await shot(page, "06-compare");
  });

  await step("Router: zone, evidence, zones.py recommendation; Apply persists and reaches the next request", async () => {
    // the active session is the saved one the Manifold click opened: a replayed trace
    await page.locator('[data-view="router"]').click();
    const zone = await page.getByTestId("router-zone").getAttribute("data-zone");
    const routerVersion = await page.getByTestId("router-measured").getAttribute("data-version");
    assert(routerVersion === "2", `Router reads the window as fingerprint v${routerVersion}, expected v2`);
    // five zone meters and the sink mass (its own quantity, no threshold)
    assert((await page.locator(".router .ev-meter").count()) === 6 && (await page.getByTestId("meter-sink").count()) === 1, "evidence meters");
    const conf = parseFloat(await page.getByTestId("router-confidence").innerText()) / 100;
    assert((await page.getByTestId("router-low-confidence").count()) === (conf < 0.3 ? 1 : 0), `confidence ${conf}: low-confidence warning shown wrongly`);
    const rec = {
      temperature: Number(await page.getByTestId("rec-temperature").innerText()),
      top_p: Number(await page.getByTestId("rec-top-p").innerText()),
      capture: await page.getByTestId("rec-capture").innerText(),
    };
    const py = spawnSync(process.env.PYTHON || "python", ["-c", `import json; from sgl_kernel import zones as z; print(json.dumps({**z.SAMPLING_HINTS["${zone}"], "capture": z.CAPTURE_MODE_HINTS["${zone}"]}))`], { encoding: "utf8", cwd: REPO });
    const want = JSON.parse(py.stdout);
    assert(rec.temperature === want.temperature && rec.top_p === want.top_p && rec.capture === want.capture, `recommendation ${JSON.stringify(rec)} vs zones.py ${JSON.stringify(want)}`);
    await page.getByTestId("router-sidecar").waitFor({ timeout: 15_000 });
    await page.getByRole("button", { name: /^(Apply to next run|Apply anyway)$/ }).click();
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
    // the "applied" banner belongs to that chat: New chat clears it
    assert((await page.getByTestId("banner").filter({ hasText: "Router settings" }).count()) === 1, "applied banner gone before New chat");
    await page.locator('[data-view="chat"]').click();
    await page.getByRole("button", { name: "New chat" }).click();
    assert((await page.getByTestId("banner").filter({ hasText: "Router settings" }).count()) === 0, "the Router's applied banner survived New chat");
  });

  await step("Router with live data: adaptive sampling switch and the sidecar's cluster, both as the sidecar says", async () => {
    await page.locator('[data-view="chat"]').click();
    // a fingerprint run like the ones discovery learnt from (same prompt, layers and settings)
    await page.getByLabel("capture mode").selectOption("fingerprint");
    await page.getByLabel("layers").fill("auto");
    await page.getByLabel("adaptive sampling").check();
    await page.getByLabel("temperature").fill("0");
    await page.getByLabel("top p").fill("0.95");
    await page.getByLabel("max tokens").fill("40");
    const n = requests.length;
    await runPrompt("Count from one to fifteen, separated by commas.");
    const body = requests[n];
    assert(body?.attention_adaptive_sampling === true && body.attention_fingerprint_mode === true, `request adaptive/fingerprint ${body?.attention_adaptive_sampling}/${body?.attention_fingerprint_mode}`);
    // the Router asks the sidecar about the window's mean fingerprint about 1 s after it renders
    const classifyReq = page.waitForRequest((r) => r.url() === `${sidecar.url}/classify` && r.method() === "POST", { timeout: 20_000 });
    await page.locator('[data-view="router"]').click();
    const clusters = new Map((await fetch(`${sidecar.url}/centroids`).then((r) => r.json())).clusters.map((c) => [c.cluster_id, c]));

    // adaptive sampling: the server switched to the hint of a cluster of the sidecar's run
    const adaptive = page.getByTestId("router-adaptive");
    await adaptive.waitFor({ timeout: 10_000 }).catch(async () => {
      const cfg = await page.getByTestId("router-adaptive-config").innerText().catch(() => "(no adaptive line)");
      throw new Error(`no adaptive sampling switch in the Router: ${cfg}`);
    });
    const aText = (await adaptive.innerText()).trim();
    const a = {
      step: Number(await adaptive.getAttribute("data-step")),
      cluster: Number(await adaptive.getAttribute("data-cluster-id")),
      zone: await adaptive.getAttribute("data-zone"),
      t: Number(await adaptive.getAttribute("data-after-temperature")),
      p: Number(await adaptive.getAttribute("data-after-top-p")),
    };
    const c = clusters.get(a.cluster);
    assert(aText.length > 0 && aText.includes(`switched at step ${a.step}`) && aText.includes(`cluster ${a.cluster}`) && aText.includes(a.zone), `adaptive line "${aText}"`);
    assert(c, `adaptive switch names cluster ${a.cluster}, not one of the sidecar's ${[...clusters.keys()]}`);
    assert(c.zone === a.zone && c.sampling_hints.temperature === a.t && c.sampling_hints.top_p === a.p, `switch ${JSON.stringify(a)} vs sidecar cluster ${JSON.stringify({ zone: c.zone, ...c.sampling_hints })}`);
    assert(a.step >= ADAPTIVE_STEPS - 1, `switched at step ${a.step}, before ${ADAPTIVE_STEPS} steps`);

    // the sidecar line: the Router's /classify answer for its window, the same when asked again
    const req = await classifyReq;
    const sent = req.postDataJSON();
    const line = page.getByTestId("router-sidecar");
    await line.waitFor({ timeout: 15_000 });
    const sText = (await line.innerText()).trim();
    const shown = { cluster: Number(await line.getAttribute("data-cluster-id")), zone: await line.getAttribute("data-zone"), run: Number(await line.getAttribute("data-run-id")) };
    const again = await fetch(`${sidecar.url}/classify`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(sent) }).then((r) => r.json());
    const truth = again.results[0];
    assert(sent.vectors?.length === 1 && sent.vectors[0].length === 20, `Router sent ${JSON.stringify(sent).slice(0, 80)}`);
    assert(shown.cluster === truth.cluster_id && shown.zone === truth.zone && shown.run === discovery.run_id, `Router shows ${JSON.stringify(shown)}, sidecar says cluster ${truth.cluster_id} (${truth.zone}), run ${truth.run_id}`);
    assert(sText.startsWith(`sidecar: cluster ${truth.cluster_id} (${truth.zone}`) && sText.includes(`T ${truth.sampling_hints.temperature}`) && sText.includes(`top_p ${truth.sampling_hints.top_p}`), `sidecar line "${sText}" vs ${JSON.stringify(truth)}`);
    if (truth.cluster_id >= 0) assert(clusters.get(truth.cluster_id)?.zone === truth.zone, "classify zone is not its cluster's zone");
    // the server's own hint of the latest step names a cluster of the same run
    const serverHint = page.getByTestId("router-server-cluster");
    if (await serverHint.count()) {
      const h = await serverHint.innerText();
      const id = Number(/cluster (-?\d+)/.exec(h)?.[1]);
      assert(id === -1 || clusters.get(id)?.zone && h.includes(clusters.get(id).zone), `server hint "${h}"`);
    }
    console.log(`# adaptive: ${aText}\n# sidecar: ${sText}`);
    // the banner still speaks of the earlier Router-applied run: dismiss it for the screenshot
    if (await page.getByTestId("banner").count()) await page.getByTestId("banner").getByRole("button", { name: "dismiss" }).click();
    await shot(page, "10-router-live");
    // the run keeps what the trace exports (run.adaptive_sampling): on by request, the server's steps, the same switch
    const run = await page.evaluate(() => {
      const r = window.__attentionExplorer.session().latestRun();
      return { cfg: r.adaptiveConfig, sw: r.adaptiveSampling };
    });
    assert(run.cfg?.enabled === true && run.cfg.source === "request" && run.cfg.steps === ADAPTIVE_STEPS, `run adaptiveConfig ${JSON.stringify(run.cfg)}`);
    assert(run.sw?.step === a.step && run.sw.cluster_id === a.cluster, `run switch ${JSON.stringify(run.sw)}`);
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
