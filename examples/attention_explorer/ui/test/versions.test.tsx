// @vitest-environment jsdom
// Issue 21 (sink-aware readings): every dashboard reading follows the fingerprint version of its
// entries. Data: one greedy reply to "Count to five." recorded from the real server (version 2, the
// default) by `node test/fixtures/record_server.mjs <url> v2`: sketch_v2.sse, fingerprint_v2.sse,
// fingerprint_v1.sse (attention_fingerprint_version 1) and raw_v2.sse (raw top-32, layer 29).
// The older recorded fixtures carry no version and must read exactly as before (version 1).
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { pairVersion, pcaDifference } from "../src/analysis/compare";
import { type Digest, digestOf, digestVersionLabel, sessionDigest, stepPoints } from "../src/analysis/digest";
import { readComponents, SHIPPED_PCA, SHIPPED_PCA_V2 } from "../src/analysis/pca";
import { decodeAll } from "../src/api/sse";
import type { CaptureMode, RawEntry, SketchEntry } from "../src/api/wire";
import { CompareView } from "../src/components/CompareView";
import { PointDetails } from "../src/components/ManifoldDetails";
import { RouterView } from "../src/components/RouterView";
import { TokenLens } from "../src/components/TokenLens";
import { buildSet, groupsVersion } from "../src/manifold/build";
import { sessionStepsGroup } from "../src/manifold/useManifoldData";
import type { SidecarState } from "../src/state/sidecar";
import type { SavedMeta } from "../src/storage/savedSessions";
import { pointsOf } from "../src/storage/savedSessions";
import { signalFromRaw, signalFromSketch, sinkMassOf, trueProbs } from "../src/trace/attention";
import { exportTrace, importTrace } from "../src/trace/jsonl";
import { TraceSession } from "../src/trace/session";
import { binOfDistance, classify, THRESHOLDS_V2 } from "../src/zones/zones";
import { defaultCapture } from "./helpers";

afterEach(cleanup);
const dir = join(__dirname, "fixtures", "recorded");

function ingest(s: TraceSession, file: string, mode: CaptureMode) {
  const m = s.addMessage("assistant", "");
  const run = s.startRun({ messageId: m.id, model: "SmolLM2-135M-Instruct", capture: { ...defaultCapture, mode }, sampling: { maxTokens: 8, temperature: 0, topP: 1 } });
  for (const it of decodeAll([readFileSync(join(dir, file))])) if (it.kind === "chunk") s.ingestChunk(run.id, it.chunk);
  s.finishRun(run.id, "done");
  return run;
}

function load(file: string, mode: CaptureMode) {
  const s = new TraceSession({ model: "SmolLM2-135M-Instruct" });
  s.batchWithAnimationFrame = false;
  s.addMessage("user", "Count to five.");
  const run = ingest(s, file, mode);
  return { s, run };
}

/** raw_v2 step 3: diffuse with the v2 thresholds, syntax_floor with v1's. */
const STEP_OF_INTEREST = 3;
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

/** The version-2 histogram of a sketch, computed by hand: per layer, sink_mass out of the bin of distance query_position. */
function handSketchHist(e: SketchEntry): number[] {
  const layers = Object.values(e.layer_sketches);
  const out = new Array(16).fill(0);
  const b = Math.floor(Math.log2(e.query_position)); // distance of position 0, >= 2 here
  for (const l of layers) {
    const h = [...l.dist_hist];
    h[b] = Math.max(0, h[b] - l.sink_mass!);
    const rest = sum(h);
    h.forEach((v, i) => (out[i] += v / rest / layers.length));
  }
  return out;
}

describe("sketch entries with fingerprint_version 2", () => {
  it("the histogram leaves the sink out per layer and renormalizes, equal to the hand computation and to the server's v2 fingerprint", () => {
    const sk = load("sketch_v2.sse", "sketch");
    const fp = load("fingerprint_v2.sse", "fingerprint");
    expect(sk.run.tokens.map((t) => t.text)).toEqual(fp.run.tokens.map((t) => t.text));
    expect(sk.run.steps.size).toBe(8);
    for (const [step, sc] of sk.run.steps) {
      const e = sc.sketch!;
      expect(e.fingerprint_version).toBe(2);
      const sig = sk.s.stepSignal(sk.run, step)!;
      expect(sig.source).toBe("sketch");
      expect(sig.version).toBe(2);
      const want = handSketchHist(e);
      sig.hist.forEach((v, i) => expect(v).toBeCloseTo(want[i], 12));
      expect(sum(sig.hist)).toBeCloseTo(1, 9);
      // the server's own version-2 fingerprint of the same (greedy) step: histogram and local/mid/long
      const server = fp.run.steps.get(step)!.fingerprint!;
      expect(server.fingerprint_version).toBe(2);
      [0, 1, 2, ...Array.from({ length: 16 }, (_, i) => 4 + i)].forEach((i) => expect(Math.abs(sig.fingerprint[i] - server.fingerprint[i])).toBeLessThan(5e-5));
      // the entropy stays the sketch's (sink included), normalized by ln(window)
      const ent = sum(Object.values(e.layer_sketches).map((l) => l.entropy)) / Object.keys(e.layer_sketches).length;
      expect(sig.fingerprint[3]).toBeCloseTo(ent / Math.log(e.query_position + 1), 12);
      // the sink's share is not in the histogram any more: the version-1 reading of the same sketch has it
      const v1 = signalFromSketch(e, 1)!;
      const b = binOfDistance(e.query_position);
      expect(v1.hist[b] - sig.hist[b]).toBeGreaterThan(0.1);
    }
  });

  it("a v2 sketch without sink_mass on every layer is read as version 1 (the sink cannot be taken out)", () => {
    const { run } = load("sketch_v2.sse", "sketch");
    const e = structuredClone(run.steps.get(0)!.sketch!);
    delete Object.values(e.layer_sketches)[1].sink_mass;
    const sig = signalFromSketch(e)!;
    expect(sig.version).toBe(1);
    const layers = Object.values(e.layer_sketches);
    sig.hist.forEach((v, i) => expect(v).toBeCloseTo(sum(layers.map((l) => l.dist_hist[i])) / layers.length, 12));
  });
});

describe("raw entries with fingerprint_version 2", () => {
  it("drop position 0 and renormalize the rest; entropy over ln(non-sink keys)", () => {
    const { s, run } = load("raw_v2.sse", "raw");
    for (const [step, sc] of run.steps) {
      const [e] = sc.raw;
      expect(e.fingerprint_version).toBe(2);
      expect(e.token_positions).toContain(0);
      const sig = s.stepSignal(run, step)!;
      expect(sig.version).toBe(2);
      const tp = trueProbs(e);
      const keep = e.token_positions.map((p, i) => [p, tp[i]] as const).filter(([p]) => p !== 0);
      const m = sum(keep.map(([, q]) => q));
      const hist = new Array(16).fill(0);
      let h = 0;
      for (const [p, q] of keep) {
        hist[binOfDistance(e.query_position - p)] += q / m;
        h -= (q / m) * Math.log(q / m);
      }
      sig.hist.forEach((v, i) => expect(v).toBeCloseTo(hist[i], 12));
      expect(sig.massCaptured).toBeCloseTo(m, 12);
      expect(sig.fingerprint[3]).toBeCloseTo(Math.min(1, h / Math.log(e.query_position)), 12);
    }
  });

  it("'exclude sinks' drops the heuristic sinks on top of position 0", () => {
    const { s, run } = load("raw_v2.sse", "raw");
    const sinks = s.sinks(run, 29);
    for (const step of run.steps.keys()) {
      const raw = run.steps.get(step)!.raw;
      const got = s.stepSignal(run, step, true)!;
      const want = signalFromRaw(raw, new Set([0, ...sinks]), 2)!;
      expect(got.version).toBe(2);
      expect(got.hist).toEqual(want.hist);
    }
  });

  it("entries without a version keep the version-1 reading (position 0 counted)", () => {
    const { run } = load("raw_v2.sse", "raw");
    const e = run.steps.get(0)!.raw[0];
    const old: RawEntry = { ...e };
    delete old.fingerprint_version;
    const sig = signalFromRaw([old])!;
    expect(sig.version).toBe(1);
    const tp = trueProbs(e);
    const b = binOfDistance(e.query_position);
    const want = sum(e.token_positions.map((p, i) => (binOfDistance(e.query_position - p) === b ? tp[i] : 0))) / sum(tp);
    expect(sig.hist[b]).toBeCloseTo(want, 12);
  });
});

describe("readings are classified with their version's thresholds", () => {
  // raw_v2 step 3: local 0.62, normalized entropy 0.64: diffuse with the v2 thresholds (0.63), syntax_floor with v1's
  const STEP = 3;

  it("server fingerprints: the entry's version; the recorded v1 and v2 runs of one reply differ", () => {
    const v2 = load("fingerprint_v2.sse", "fingerprint");
    const v1 = load("fingerprint_v1.sse", "fingerprint");
    for (const [step, sc] of v2.run.steps) {
      const sig = v2.s.stepSignal(v2.run, step)!;
      expect(sig.version).toBe(2);
      const z = classify(sig.fingerprint, 2);
      expect(z.zone).toBe(sc.fingerprint!.manifold);
      expect(z.confidence).toBeCloseTo(sc.fingerprint!.manifold_confidence, 5);
      expect(v1.s.stepSignal(v1.run, step)!.version).toBe(1);
      expect(classify(v1.run.steps.get(step)!.fingerprint!.fingerprint, 1).zone).toBe(v1.run.steps.get(step)!.fingerprint!.manifold);
    }
    expect(v1.s.summary(v1.run).zoneCounts).toEqual({ semantic_bridge: 8 });
    expect(v2.s.summary(v2.run).zoneCounts).toEqual({ syntax_floor: 5, diffuse: 3 });
  });

  it("the dashboard's own readings (summary, stepPoints, digest) use v2 thresholds for v2 steps", () => {
    const { s, run } = load("raw_v2.sse", "raw");
    const sig = s.stepSignal(run, STEP)!;
    expect(classify(sig.fingerprint, 1).zone).toBe("syntax_floor");
    expect(classify(sig.fingerprint, 2).zone).toBe("diffuse");
    const pts = stepPoints(s);
    expect(pts.find((p) => p.step === STEP)).toMatchObject({ zone: "diffuse", version: 2 });
    const sum1 = s.summary(run);
    const want: Record<string, number> = {};
    for (const step of run.steps.keys()) {
      const z = classify(s.stepSignal(run, step)!.fingerprint, 2).zone;
      want[z] = (want[z] ?? 0) + 1;
    }
    expect(sum1.zoneCounts).toEqual(want);
    expect(sum1.zoneCounts.diffuse).toBeGreaterThan(0);
    // the exported metrics record carries the same v2 zones
    const metrics = exportTrace(s).split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.record_type === "metrics");
    expect(metrics.zone_counts).toEqual(want);
    // a digest classifies with the versions it is given
    expect(digestOf([sig.fingerprint], undefined, { versions: [2] }).dominantZone).toBe("diffuse");
    expect(digestOf([sig.fingerprint]).dominantZone).toBe("syntax_floor");
  });

  it("Token Lens Signal tab: the v2 zone and traits, and a note saying what was measured", () => {
    const { s, run } = load("raw_v2.sse", "raw");
    const pos = (run.promptLen ?? 0) + STEP;
    const { container } = render(
      <TokenLens session={s} focus={{ runId: run.id, position: pos }} pinned opts={{ layer: null, excludeSinks: false }} caps={null} onClose={() => {}} onJump={() => {}} />,
    );
    fireEvent.click(container.querySelector('[data-tab="signal"]')!);
    expect(container.querySelector(".signal")!.getAttribute("data-zone")).toBe("diffuse");
    const note = screen.getByTestId("signal-source-note");
    expect(note.getAttribute("data-version")).toBe("2");
    expect(note.textContent).toMatch(/sink-aware \(v2\): position 0 left out/);
    expect(note.textContent).toMatch(/v2 thresholds/);
    expect(container.textContent).toMatch(/diffuse/);
    cleanup();
    // a v2 sketch says how the sink was taken out, the assumed sink count, and what the entropy includes
    const sk = load("sketch_v2.sse", "sketch");
    const c2 = render(
      <TokenLens session={sk.s} focus={{ runId: sk.run.id, position: (sk.run.promptLen ?? 0) + 1 }} pinned opts={{ layer: null, excludeSinks: false }} caps={null} onClose={() => {}} onJump={() => {}} />,
    ).container;
    fireEvent.click(c2.querySelector('[data-tab="signal"]')!);
    const n2 = screen.getByTestId("signal-source-note").textContent!;
    expect(n2).toMatch(/sink_mass is taken out of the histogram bin/);
    expect(n2).toMatch(/one sink position/);
    expect(n2).toMatch(/entropy is the sketch's, over all keys with the sink included/);
  });

  it("Router: the window's mean is classified, and its meters drawn, with the v2 thresholds", () => {
    const { s } = load("raw_v2.sse", "raw");
    const sidecar = { state: "off", ready: false, client: null, status: null, clusters: [], pca: null, pcaSource: "shipped", error: null } as unknown as SidecarState;
    render(<RouterView session={s} version={s.version} sidecar={sidecar} pending={null} onApply={() => {}} onCancel={() => {}} />);
    const pts = stepPoints(s);
    const mean = digestOf(pts.map((p) => p.fingerprint)).mean;
    expect(screen.getByTestId("router-zone").getAttribute("data-zone")).toBe(classify(mean, 2).zone);
    const measured = screen.getByTestId("router-measured");
    expect(measured.getAttribute("data-version")).toBe("2");
    expect(measured.textContent).toMatch(/sink-aware: position 0 left out/);
    expect(screen.getByTestId("meter-local").textContent).toContain(`syntax_floor at ≥ ${THRESHOLDS_V2.syntax_floor}`);
    expect(screen.getByTestId("meter-entropy").textContent).toContain(`diffuse at ≥ ${THRESHOLDS_V2.diffuse}`);
    expect(screen.getByTestId("meter-sink").textContent).toMatch(/leave it out/);
  });
});

describe("digest version labelling", () => {
  it("2 when every step is v2; a session mixing v1 and v2 steps is labelled mixed and read as v1", () => {
    const v2 = load("sketch_v2.sse", "sketch");
    const d2 = sessionDigest(v2.s);
    expect(d2).toMatchObject({ version: 2, mixedVersions: false });
    expect(digestVersionLabel(d2)).toBe("v2 (sink-aware)");
    // a v1 run (the older recorded sketch, no version) next to the v2 run in one session
    ingest(v2.s, "sketch_auto_layers.sse", "sketch");
    const mixed = sessionDigest(v2.s);
    expect(mixed).toMatchObject({ version: 1, mixedVersions: true, nSteps: 16 });
    expect(digestVersionLabel(mixed)).toMatch(/mixed/);
    const old = sessionDigest(load("sketch_auto_layers.sse", "sketch").s);
    expect(old).toMatchObject({ version: 1, mixedVersions: false });
    expect(digestVersionLabel(old)).toBe("v1");
  });

  it("Compare: the shipped PCA of the pair's version, and a warning when A and B differ", () => {
    const a = sessionDigest(load("sketch_v2.sse", "sketch").s);
    const b = sessionDigest(load("raw_v2.sse", "raw").s);
    const old = sessionDigest(load("sketch_auto_layers.sse", "sketch").s);
    expect(pairVersion(a, b)).toBe(2);
    const diff = b.mean.map((x, i) => x - a.mean[i]);
    expect(pcaDifference(a, b)).toEqual(readComponents(diff, SHIPPED_PCA_V2, false));
    expect(pcaDifference(old, b)).toEqual(readComponents(b.mean.map((x, i) => x - old.mean[i]), SHIPPED_PCA, false));
    const meta = (id: string, digest: Digest): SavedMeta => ({ id, name: id, savedAt: `2026-01-0${id.length}T00:00:00Z`, model: "m", traceId: id, bytes: 1, digest });
    const { unmount } = render(<CompareView saved={[meta("b", b), meta("aa", a)]} pca={null} />);
    expect(screen.getByTestId("compare-pca-source").getAttribute("data-pca")).toBe("shipped-v2");
    const rows = [...screen.getByTestId("compare-pca").querySelectorAll("tbody tr td:nth-child(2)")].map((td) => td.textContent);
    expect(rows).toEqual(SHIPPED_PCA_V2.components.map((c) => c.name));
    expect(screen.getByTestId("compare-measured").textContent).toMatch(/v2, sink-aware: position 0 left out/);
    expect(screen.queryByTestId("compare-version-mismatch")).toBeNull();
    unmount();
    render(<CompareView saved={[meta("b", b), meta("aa", old)]} pca={null} />);
    expect(screen.getByTestId("compare-pca-source").getAttribute("data-pca")).toBe("shipped-v1");
    expect(screen.getByTestId("compare-version-mismatch").textContent).toMatch(/A is v1 and B is v2 \(sink-aware\)/);
  });
});

describe("Manifold point details", () => {
  it("a step point shows its own sink mass and is read with its version", async () => {
    const { s, run } = load("raw_v2.sse", "raw");
    const g = sessionStepsGroup(s, "Live session")!;
    expect(Array.from(g.versions!)).toEqual(new Array(8).fill(2));
    expect(groupsVersion([g])).toBe(2);
    const set = await buildSet([g], SHIPPED_PCA_V2, null);
    const i = [...set.step].indexOf(STEP_OF_INTEREST);
    const own = sinkMassOf(run.steps.get(STEP_OF_INTEREST))!.mass;
    render(<PointDetails set={set} index={i} />);
    expect(screen.getByTestId("details-step-sink-mass").textContent).toContain(`${(own * 100).toFixed(1)}%`);
    expect(own).not.toBeCloseTo(g.owner.sinkMass!, 3); // the step's own value, not the session mean
    expect(screen.getByTestId("details-zone").textContent).toBe("diffuse");
    expect(screen.getByTestId("details-version").getAttribute("data-version")).toBe("2");
    // saved points keep the versions and per-step sink masses
    const saved = pointsOf(s, "x");
    expect(Array.from(saved.versions!)).toEqual(new Array(8).fill(2));
    expect(saved.sinkMasses![STEP_OF_INTEREST]).toBeCloseTo(own, 6);
  });
});
describe("old fixtures (no fingerprint_version) are unchanged", () => {
  it("read as version 1 with the sink in, and round-trip through JSONL with the same readings", () => {
    for (const [file, mode] of [
      ["sketch_auto_layers.sse", "sketch"],
      ["fingerprint_auto_layers.sse", "fingerprint"],
      ["raw_masked_prompt_attention.sse", "raw"],
      ["heads_lens_logprobs.sse", "raw"],
    ] as const) {
      const { s, run } = load(file, mode);
      for (const step of run.steps.keys()) {
        const sig = s.stepSignal(run, step)!;
        expect(sig.version).toBe(1);
        const sc = run.steps.get(step)!;
        if (sc.sketch) {
          const layers = Object.values(sc.sketch.layer_sketches);
          sig.hist.forEach((v, i) => expect(v).toBeCloseTo(sum(layers.map((l) => l.dist_hist[i])) / layers.length, 12));
        }
        if (!sc.fingerprint && !sc.sketch) expect(sig).toEqual(signalFromRaw(sc.raw, undefined, 1));
      }
      expect(sessionDigest(s).version).toBe(1);
      const back = importTrace(exportTrace(s));
      const r2 = [...back.runs.values()][0];
      expect(back.summary(r2).zoneCounts).toEqual(s.summary(run).zoneCounts);
    }
  });
});
