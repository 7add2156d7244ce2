// @vitest-environment jsdom
// Issue 21: per-head capture (head grid), logit lens + next-token alternatives, dense replay
// (attention map), sink_mass readings, the truncated label, keyboard navigation, link anchors in
// a scrolled box, import de-duplication and the Manifold's live/saved de-duplication. Data: the
// responses recorded from the real server by test/fixtures/record_server.mjs.
import { act, cleanup, fireEvent, render, screen } from "@testing-library/react";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { useState } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { sessionDigest } from "../src/analysis/digest";
import { buildChatRequest } from "../src/api/client";
import { attendersOf, decodeBase64Replay, decodeNpy, keysOf } from "../src/api/replay";
import { decodeAll } from "../src/api/sse";
import type { LogitLensEntry, RawEntry } from "../src/api/wire";
import { AttentionMapView, paintMatrix, sequenceOf } from "../src/components/AttentionMapView";
import { ChatView } from "../src/components/ChatView";
import type { Focus, ViewOptions } from "../src/components/focus";
import { HeadGrid } from "../src/components/HeadGrid";
import { Hud } from "../src/components/Hud";
import { InspectView } from "../src/components/InspectView";
import { anchorFor } from "../src/components/LinkOverlay";
import { LogitLensTab } from "../src/components/LogitLensTab";
import { LOW_CONFIDENCE, RouterView } from "../src/components/RouterView";
import { RunTokens } from "../src/components/RunTokens";
import { TokenLens } from "../src/components/TokenLens";
import { KIND, groupFromSteps, syntheticGroup } from "../src/manifold/build";
import { scopeGroups, sessionStepsGroup } from "../src/manifold/useManifoldData";
import { importInto, liveEntry, type Loaded } from "../src/state/loaded";
import { useEscape } from "../src/state/useEscape";
import type { SidecarState } from "../src/state/sidecar";
import type { SavedMeta } from "../src/storage/savedSessions";
import { trueProbs } from "../src/trace/attention";
import { exportTrace, importTrace } from "../src/trace/jsonl";
import { tokenLinks } from "../src/trace/links";
import { derivedEntries, runStatusLabel, TraceSession } from "../src/trace/session";
import { classify, FINGERPRINT_DIM } from "../src/zones/zones";
import { defaultCapture } from "./helpers";

afterEach(cleanup);
// jsdom has no layout: ChatView follows the stream with scrollIntoView
Element.prototype.scrollIntoView ??= function () {};
// jsdom has no canvas (the map draws nothing here; its data path is what is tested) and no PointerEvent
HTMLCanvasElement.prototype.getContext = (() => null) as unknown as HTMLCanvasElement["getContext"];
if (typeof window.PointerEvent === "undefined") {
  (window as unknown as { PointerEvent: unknown }).PointerEvent = class extends MouseEvent {
    pointerId: number;
    constructor(type: string, init: PointerEventInit = {}) {
      super(type, init);
      this.pointerId = init.pointerId ?? 0;
    }
  };
}
const dir = join(__dirname, "fixtures", "recorded");

/** The recorded per-head + logit lens + logprobs reply (6 tokens, max_tokens 6: cut off). */
function recorded() {
  const items = decodeAll([readFileSync(join(dir, "heads_lens_logprobs.sse"))]);
  const s = new TraceSession({ model: "SmolLM2-135M-Instruct" });
  s.batchWithAnimationFrame = false;
  s.addMessage("user", "Count to five.");
  const m = s.addMessage("assistant", "");
  const capture = { ...defaultCapture, topK: 5, layers: [15, 29], perHead: true, logitLens: true, topLogprobs: 3, maskSystemPrompt: false, includePromptAttention: false };
  const run = s.startRun({ messageId: m.id, model: "SmolLM2-135M-Instruct", capture, sampling: { maxTokens: 6, temperature: 0, topP: 1 } });
  for (const it of items) if (it.kind === "chunk") s.ingestChunk(run.id, it.chunk);
  s.finishRun(run.id, "done");
  const wire = items.flatMap((it) => (it.kind === "chunk" ? [it.chunk] : []));
  return { s, run, wire };
}

describe("per-head capture from the real server", () => {
  it("keeps every head entry, derives the layer's head mean, and exports only what the server sent", () => {
    const { s, run, wire } = recorded();
    expect(run.heads).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(run.layers).toEqual([15, 29]);
    expect(run.tokens).toHaveLength(6);
    for (const sc of run.steps.values()) {
      expect(sc.heads).toHaveLength(18);
      expect(sc.raw.map((r) => r.layer_id).sort()).toEqual([15, 29]);
      for (const mean of sc.raw) {
        expect(derivedEntries.has(mean)).toBe(true);
        const heads = sc.heads.filter((h) => h.layer_id === mean.layer_id);
        // p(j) of the mean = mean over heads of p_h(j) (0 outside a head's top-k)
        const j = mean.token_positions[0];
        const expected = heads.reduce((a, h) => a + (trueProbs(h)[h.token_positions.indexOf(j)] ?? 0), 0) / heads.length;
        expect(trueProbs(mean)[0]).toBeCloseTo(expected, 12);
        expect(mean.sink_mass).toBeCloseTo(heads.reduce((a, h) => a + h.sink_mass!, 0) / heads.length, 12);
      }
    }
    // export writes the wire entries only (no derived mean), and comes back byte for byte
    const sent = wire.reduce((n, c) => n + (c.choices[0]?.attention_tokens?.length ?? 0), 0);
    const lines = exportTrace(s).trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.filter((r) => r.record_type === "step").reduce((n, r) => n + r.entries.length, 0)).toBe(sent);
    const back = importTrace(exportTrace(s));
    expect(exportTrace(back)).toBe(exportTrace(s));
    const r2 = [...back.runs.values()][0];
    expect(r2.heads).toEqual(run.heads);
    expect(r2.steps.get(2)!.raw[0].token_positions).toEqual(run.steps.get(2)!.raw[0].token_positions);
  });

  it("a focused head's links are that head's top-k; the mean's are the derived mean", () => {
    const { s, run } = recorded();
    const pos = (run.promptLen ?? 0) + 3;
    const h3 = run.steps.get(3)!.heads.find((h) => h.layer_id === 29 && h.head_id === 3)!;
    expect(tokenLinks(s, run, pos, 29, false, 3).map((l) => l.position)).toEqual(h3.token_positions);
    expect(tokenLinks(s, run, pos, 29, false, null).map((l) => l.position)).toEqual(run.steps.get(3)!.raw.find((r) => r.layer_id === 29)!.token_positions);
  });

  it("HeadGrid: layers x heads cells, strongest key per cell, click focuses (again: unfocuses)", () => {
    const { s, run } = recorded();
    const pos = (run.promptLen ?? 0) + 2;
    const calls: [number, number | null][] = [];
    const { container, rerender } = render(<HeadGrid session={s} run={run} pos={pos} focus={{ layer: null, head: null }} onFocusHead={(l, h) => calls.push([l, h])} />);
    const cells = container.querySelectorAll(".head-cell");
    expect(cells).toHaveLength(18);
    expect(screen.getByTestId("head-grid").getAttribute("data-layers")).toBe("2");
    for (const c of cells) {
      const e = run.steps.get(2)!.heads.find((h) => h.layer_id === Number(c.getAttribute("data-layer")) && h.head_id === Number(c.getAttribute("data-head")))!;
      const tp = trueProbs(e);
      expect(Number(c.getAttribute("data-top"))).toBe(e.token_positions[tp.indexOf(Math.max(...tp))]);
      expect(c.querySelectorAll("rect")).toHaveLength(e.token_positions.length);
    }
    fireEvent.click(container.querySelector('.head-cell[data-layer="29"][data-head="4"]')!);
    expect(calls).toEqual([[29, 4]]);
    rerender(<HeadGrid session={s} run={run} pos={pos} focus={{ layer: 29, head: 4 }} onFocusHead={(l, h) => calls.push([l, h])} />);
    expect(container.querySelectorAll(".head-cell.active")).toHaveLength(1);
    fireEvent.click(container.querySelector(".head-cell.active")!);
    expect(calls[1]).toEqual([29, null]);
  });

  it("HeadGrid says how to turn per-head capture on when the run has none", () => {
    const s = importTrace(readFileSync(join(__dirname, "fixtures", "trace_v1_0.jsonl"), "utf8"));
    const run = [...s.runs.values()][0];
    render(<HeadGrid session={s} run={run} pos={(run.promptLen ?? 0) + 1} focus={{ layer: null, head: null }} onFocusHead={() => {}} />);
    expect(screen.getByTestId("head-grid-empty").textContent).toMatch(/per-head capture/);
  });
});

describe("logit lens and next-token alternatives from the real server", () => {
  it("lens entries and logprobs land on their steps", () => {
    const { run } = recorded();
    for (const t of run.tokens) {
      const lens = run.lens.get(t.step)!;
      expect(lens.map((e) => e.layer_id).sort((a, b) => a - b)).toEqual([7, 15, 22, 29]);
      for (const e of lens) expect(e.token!.id).toBe(t.id);
      expect(run.logprobs[t.step]!.token).toBe(t.text);
      // temperature 0: the last layer's lens top token is the produced one
      expect(lens.find((e) => e.layer_id === 29)!.top_tokens[0].id).toBe(t.id);
    }
  });

  it("the tab highlights the produced token, marks the first layer it appears in, and lists the alternatives", () => {
    const { s, run } = recorded();
    for (const t of run.tokens) {
      cleanup();
      const { container } = render(<LogitLensTab session={s} run={run} pos={(run.promptLen ?? 0) + t.step} />);
      const lens = [...run.lens.get(t.step)!].sort((a, b) => a.layer_id - b.layer_id);
      const first = lens.find((e: LogitLensEntry) => e.top_tokens.some((x) => x.id === t.id))!.layer_id;
      expect(screen.getByTestId("lens-first-layer").textContent).toBe(`layer ${first}`);
      expect(container.querySelector("tr.first")!.getAttribute("data-layer")).toBe(String(first));
      const produced = [...container.querySelectorAll(".lens-chip.produced")].map((c) => c.closest("tr")!.getAttribute("data-layer"));
      expect(produced).toEqual(lens.filter((e) => e.top_tokens.some((x) => x.id === t.id)).map((e) => String(e.layer_id)));
      const alt = screen.getByTestId("alternatives");
      expect(alt.querySelectorAll("tbody tr")).toHaveLength(3);
      expect(alt.querySelector("tr.produced code")!.textContent).toBe(JSON.stringify(t.text).slice(1, -1));
    }
  });

  it("each output token's tooltip carries its probability and the alternatives", () => {
    const { s, run } = recorded();
    const { container } = render(<RunTokens session={s} run={run} version={s.version} hover={null} pinned={null} opts={{ layer: null, excludeSinks: false }} onHover={() => {}} onPin={() => {}} />);
    for (const t of run.tokens) {
      const lp = run.logprobs[t.step]!;
      const title = container.querySelector(`.tok[data-pos="${(run.promptLen ?? 0) + t.step}"]`)!.getAttribute("title")!;
      expect(title).toContain(`p ${(Math.exp(lp.logprob) * 100).toFixed(1)}%`);
      for (const a of lp.top_logprobs!) if (a.token !== lp.token) expect(title).toContain(`${JSON.stringify(a.token)} ${(Math.exp(a.logprob) * 100).toFixed(1)}%`);
    }
  });

  it("a run without them says which setting turns them on", () => {
    const s = importTrace(readFileSync(join(__dirname, "fixtures", "trace_v1_0.jsonl"), "utf8"));
    const run = [...s.runs.values()][0];
    render(<LogitLensTab session={s} run={run} pos={(run.promptLen ?? 0) + 0} />);
    expect(screen.getByTestId("lens-empty").textContent).toMatch(/logit lens/);
    expect(screen.getByTestId("alternatives-empty").textContent).toMatch(/top_logprobs/);
  });

  it("request fields: per-head, logit lens and top_logprobs", () => {
    const base = { model: "m", messages: [], sampling: { maxTokens: 4, temperature: 0, topP: 1 }, captureEnabled: true };
    const b = buildChatRequest({ ...base, capture: { ...defaultCapture, headIds: [1], perHead: true, logitLens: true, lensTopK: 7, topLogprobs: 4 } });
    expect(b.attention_capture_heads).toBe("each");
    expect(b.attention_capture_head_ids).toBeUndefined();
    expect([b.return_logit_lens, b.logit_lens_layers, b.logit_lens_top_k]).toEqual([true, "auto", 7]);
    expect([b.logprobs, b.top_logprobs]).toEqual([true, 4]);
    const off = buildChatRequest({ ...base, capture: { ...defaultCapture, headIds: [1] } });
    expect(off.attention_capture_head_ids).toEqual([1]);
    expect(off.return_logit_lens).toBeUndefined();
    expect(off.logprobs).toBeUndefined();
  });
});

describe("dense replay (attention map)", () => {
  const npy = (f: string) => {
    const b = readFileSync(join(dir, f));
    return decodeNpy(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  it(".npy and base64 answers decode to the same causal, row-stochastic matrix", () => {
    const a = npy("replay_l29_mean.npy");
    const j = decodeBase64Replay(JSON.parse(readFileSync(join(dir, "replay_l29_mean.json"), "utf8")));
    const T = a.shape[3];
    expect(a.shape).toEqual([1, 1, 40, 40]);
    expect(j.shape).toEqual(a.shape);
    expect(Array.from(a.data)).toEqual(Array.from(j.data));
    for (let i = 0; i < T; i++) {
      let sum = 0;
      for (let k = 0; k < T; k++) {
        if (k > i) expect(a.data[i * T + k]).toBe(0);
        sum += a.data[i * T + k];
      }
      expect(Math.abs(sum - 1)).toBeLessThan(0.02);
    }
  });

  it("replayed head 3 of layer 29 matches the per-head capture of the same tokens", () => {
    const m = npy("replay_l29_h3.npy");
    const T = m.shape[3];
    const { run } = recorded();
    let checked = 0;
    for (const sc of run.steps.values()) {
      const e = sc.heads.find((h) => h.layer_id === 29 && h.head_id === 3) as RawEntry;
      const tp = trueProbs(e);
      e.token_positions.forEach((p, i) => {
        expect(Math.abs(m.data[e.query_position * T + p] - tp[i])).toBeLessThan(2e-3 + tp[i] * 2e-3);
        checked++;
      });
    }
    expect(checked).toBe(6 * 5);
  });

  it("who attends to a token / what a query attends to, largest first", () => {
    const m = npy("replay_l29_mean.npy");
    const T = m.shape[3];
    const att = attendersOf(m.data, T, 5, 100);
    expect(att).toHaveLength(T - 5);
    expect(att.every((a) => a.query >= 5)).toBe(true);
    for (let i = 1; i < att.length; i++) expect(att[i - 1].p).toBeGreaterThanOrEqual(att[i].p);
    const keys = keysOf(m.data, T, 30, 100);
    expect(keys).toHaveLength(31);
    expect(keys[0].p).toBe(Math.max(...Array.from(m.data.subarray(30 * T, 30 * T + 31))));
  });

  it("the map replays the run's prompt + output ids; masked prompts are refused with a reason", () => {
    const { run } = recorded();
    expect(sequenceOf(run).ids).toEqual(JSON.parse(readFileSync(join(dir, "replay_input_ids.json"), "utf8")));
    expect(sequenceOf(run, 10)).toMatchObject({ cut: 30 });
    const masked = structuredClone(run);
    masked.promptTokens[0] = { ...masked.promptTokens[0], id: null, masked: true };
    expect(sequenceOf(masked).problem).toMatch(/masked/);
  });

  it("AttentionMapView: requests the run's ids as .npy, shows T x T, and a click lists who attends to the key", async () => {
    const { s, run } = recorded();
    const bytes = readFileSync(join(dir, "replay_l29_mean.npy"));
    const calls: Record<string, unknown>[] = [];
    vi.stubGlobal("fetch", async (_url: string, init: RequestInit) => {
      calls.push(JSON.parse(String(init.body)));
      return new Response(bytes, { status: 200, headers: { "content-type": "application/octet-stream" } });
    });
    try {
      const pins: (Focus | null)[] = [];
      render(<AttentionMapView session={s} version={s.version} serverUrl="http://x" apiKey="" caps={null} pinned={null} onPin={(f) => pins.push(f)} />);
      await screen.findByText(/^40 × 40 · layer 29 · mean of heads/);
      expect(calls).toHaveLength(1);
      expect(calls[0]).toMatchObject({ input_ids: JSON.parse(readFileSync(join(dir, "replay_input_ids.json"), "utf8")), layers: [29], heads: "mean", format: "npy" });
      // jsdom has no layout: the canvas sits at (0, 0) and is 600 x 400, so Fit puts cell (i, j) at 96 + (j + .5) s, 64 + (i + .5) s
      const sc = Math.min(600 - 104, 400 - 72) / 40;
      const canvas = screen.getByTestId("map-canvas");
      const at = (i: number, j: number) => ({ clientX: 96 + (j + 0.5) * sc, clientY: 64 + (i + 0.5) * sc, pointerId: 1 });
      fireEvent.pointerDown(canvas, at(35, 12));
      fireEvent.pointerUp(canvas, at(35, 12));
      const att = await screen.findByTestId("map-attenders");
      const m = decodeNpy(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      const want = attendersOf(m.data, 40, 12, 16);
      expect([...att.querySelectorAll("tr td:first-child")].map((td) => Number(td.textContent))).toEqual(want.map((a) => a.query));
      expect(screen.getByTestId("map-details").querySelector("h4")!.textContent).toMatch(/^Who attends to key 12 /);
      // row 35 is the query that produced token 36: that token is pinned
      expect(pins).toEqual([{ runId: run.id, position: 36 }]);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it("paints the lower triangle by value and the upper triangle grey", () => {
    const m = npy("replay_l29_mean.npy");
    const T = m.shape[3];
    const out = paintMatrix(m.data, T, "linear");
    const px = out instanceof Uint8ClampedArray ? out : out.data;
    const at = (i: number, j: number) => Array.from(px.slice((i * T + j) * 4, (i * T + j) * 4 + 3));
    expect(at(0, 5)).toEqual([241, 243, 245]);
    expect(at(0, 0)).toEqual([16, 40, 120]); // p = 1: darkest
    expect(at(30, 1)[0]).toBeGreaterThan(at(30, 0)[0]); // the sink takes more than position 1
  });
});

describe("readings and labels", () => {
  it("a reply cut off by max_tokens is 'truncated', in the chat header and the HUD", () => {
    const { s, run } = recorded();
    expect(run.metrics.finishReason).toBe("length");
    expect(runStatusLabel(run)).toBe("truncated");
    expect(runStatusLabel({ ...run, metrics: { ...run.metrics, finishReason: "stop" } })).toBe("done");
    const { container } = render(<Hud session={s} />);
    expect(container.querySelector('[data-hud="status"]')!.textContent).toBe("truncated");
    cleanup();
    render(
      <ChatView session={s} version={s.version} hover={null} pinned={null} opts={{ layer: null, excludeSinks: false }} setOpts={() => {}} onHover={() => {}} onPin={() => {}} busy={false} canSend readOnly onSend={() => {}} onStop={() => {}} onRegenerate={() => {}} />,
    );
    expect(screen.getByTestId("run-status").textContent).toBe("truncated");
    expect(screen.getByTestId("tint-legend").querySelectorAll("i.tok")).toHaveLength(8);
    expect(screen.getByTestId("tint-legend").textContent).toMatch(/received/);
  });

  it("Signal shows the server's sink mass; 'exclude sinks' changes the raw estimate; the digest keeps sink mass", () => {
    const { s, run } = recorded();
    const pos = (run.promptLen ?? 0) + 2;
    const focus = { runId: run.id, position: pos };
    const opts: ViewOptions = { layer: null, excludeSinks: false };
    const { container, rerender } = render(<TokenLens session={s} focus={focus} pinned opts={opts} caps={null} onClose={() => {}} onJump={() => {}} />);
    fireEvent.click(container.querySelector('[data-tab="signal"]')!);
    const sc = run.steps.get(2)!;
    const want = sc.raw.reduce((a, r) => a + r.sink_mass!, 0) / sc.raw.length;
    expect(screen.getByTestId("signal-sink-mass").textContent).toContain(`${(want * 100).toFixed(1)}%`);
    const local = () => container.querySelector(".metrics-table tr td.num")!.textContent;
    const withSinks = local();
    rerender(<TokenLens session={s} focus={focus} pinned opts={{ ...opts, excludeSinks: true }} caps={null} onClose={() => {}} onJump={() => {}} />);
    expect(local()).not.toBe(withSinks);
    expect(container.textContent).toMatch(/sink positions are dropped/);
    const d = sessionDigest(s);
    const all = [...run.steps.values()].flatMap((x) => x.raw.map((r) => r.sink_mass!));
    expect(d.sinkMass).toBeCloseTo([...run.steps.values()].reduce((a, x) => a + x.raw.reduce((b, r) => b + r.sink_mass!, 0) / x.raw.length, 0) / run.steps.size, 12);
    expect(all.length).toBe(12);
  });

  it("Inspect starts on the generated tokens when no prompt attention was captured", () => {
    const { s } = recorded();
    render(<InspectView session={s} version={s.version} opts={{ layer: null, excludeSinks: false }} setOpts={() => {}} pinned={null} onPin={() => {}} />);
    expect(screen.getByTestId("inspect-rows").textContent).toMatch(/^6 rows \(34 prompt rows hidden/);
    expect((screen.getByLabelText("segment filter") as HTMLSelectElement).value).toBe("generated");
  });

  it("Router: a low-confidence zone gets a warning and 'Apply anyway'; a confident one does not", () => {
    const sidecar = { state: "off", ready: false, client: null, status: null, clusters: [], pca: null, error: null } as unknown as SidecarState;
    // fingerprints of a clear syntax_floor window and of a mixed one
    const fp = (local: number, mid: number, long: number, ent: number) => {
      const h = new Array(16).fill(0);
      h[1] = local;
      h[5] = mid;
      h[9] = long;
      return [local, mid, long, ent, ...h];
    };
    const mixed = [fp(0.6, 0.3, 0.1, 0.4), fp(0.45, 0.45, 0.1, 0.5)].find((f) => classify(f).confidence < LOW_CONFIDENCE)!;
    const clear = [fp(0.95, 0.05, 0, 0.1), fp(0.9, 0.1, 0, 0.15)].find((f) => classify(f).confidence >= LOW_CONFIDENCE)!;
    expect(mixed && clear).toBeTruthy();
    for (const [f, low] of [[mixed, true], [clear, false]] as const) {
      cleanup();
      const s = new TraceSession();
      s.batchWithAnimationFrame = false;
      const m = s.addMessage("assistant", "");
      const run = s.startRun({ messageId: m.id, model: "m", capture: { ...defaultCapture, mode: "fingerprint" }, sampling: { maxTokens: 4, temperature: 1, topP: 1 } });
      s.ingestEntries(run.id, [0, 1, 2].map((step) => ({ mode: "fingerprint" as const, decode_step: step, query_position: 40 + step, fingerprint: f, manifold: classify(f).zone, manifold_confidence: classify(f).confidence })));
      render(<RouterView session={s} version={s.version} sidecar={sidecar} pending={null} onApply={() => {}} onCancel={() => {}} />);
      expect(!!screen.queryByTestId("router-low-confidence")).toBe(low);
      expect(screen.getByRole("button", { name: low ? "Apply anyway" : "Apply to next run" })).toBeTruthy();
      expect(screen.getByTestId("router-measured").textContent).toMatch(/as the server sent them/);
    }
  });
});

describe("rough edges", () => {
  it("link anchors: a target scrolled out of its box ends at that box's edge, a visible one at the token", () => {
    const clip = { top: 100, bottom: 280, left: 10, right: 500 };
    expect(anchorFor({ top: 40, bottom: 58, left: 100, right: 120 }, [clip])).toEqual({ x: 110, y: 100, offscreen: "above" });
    expect(anchorFor({ top: 300, bottom: 318, left: 600, right: 640 }, [clip])).toEqual({ x: 500, y: 280, offscreen: "below" });
    expect(anchorFor({ top: 150, bottom: 168, left: 100, right: 120 }, [clip])).toEqual({ x: 110, y: 152, offscreen: "" });
    expect(anchorFor({ top: 40, bottom: 58, left: 100, right: 120 }, [])).toEqual({ x: 110, y: 42, offscreen: "" });
  });

  it("keyboard: Tab-focusable tokens, arrows move the lens token, Enter pins, Escape closes", () => {
    const { s, run } = recorded();
    function Harness() {
      const [hover, setHover] = useState<Focus | null>(null);
      const [pinned, setPinned] = useState<Focus | null>(null);
      useEscape(() => (setHover(null), setPinned(null)));
      const opts = { layer: null, excludeSinks: false };
      return (
        <>
          <RunTokens session={s} run={run} version={s.version} hover={hover} pinned={pinned} opts={opts} onHover={setHover} onPin={setPinned} />
          <TokenLens session={s} focus={pinned ?? hover} pinned={!!pinned} opts={opts} caps={null} onClose={() => setPinned(null)} onJump={setPinned} />
        </>
      );
    }
    const { container } = render(<Harness />);
    const box = container.querySelector(".run-tokens") as HTMLElement;
    expect(box.tabIndex).toBe(0);
    box.focus();
    const key = (k: string) => act(() => void fireEvent.keyDown(box, { key: k }));
    key("ArrowRight");
    // the prompt strip is open (34 tokens <= 160): the first token is position 0
    expect(box.getAttribute("data-focus-pos")).toBe("0");
    expect(container.querySelector(".lens.open")).toBeTruthy();
    key("End");
    expect(box.getAttribute("data-focus-pos")).toBe(String((run.promptLen ?? 0) + 5));
    key("ArrowLeft");
    expect(box.getAttribute("data-focus-pos")).toBe(String((run.promptLen ?? 0) + 4));
    key("Enter");
    expect(container.querySelector(".lens .badge")!.textContent).toBe("pinned");
    expect(container.querySelector(".tok.pinned")!.getAttribute("data-pos")).toBe(String((run.promptLen ?? 0) + 4));
    act(() => void fireEvent.keyDown(window, { key: "Escape" }));
    expect(container.querySelector(".lens.open")).toBeNull();
    expect(container.querySelector(".tok.pinned")).toBeNull();
  });

  it("importing a trace that is already loaded: a new id (unique keys); the same file twice: shows the first copy", () => {
    const { s } = recorded();
    const live: Loaded = { ...liveEntry(), session: s };
    const text = exportTrace(s);
    const a = importInto([live], text, "t.jsonl");
    if (a.kind !== "added") throw new Error("not added");
    expect(a.next).toHaveLength(2);
    expect(a.next[1].session.traceId).not.toBe(s.traceId);
    expect(new Set(a.next.map((l) => l.key)).size).toBe(2);
    expect(a.text).toMatch(/already loaded/);
    const b = importInto(a.next, text, "t.jsonl");
    expect(b).toMatchObject({ kind: "existing", at: 1 });
    // a third copy of the same trace id under another file text still gets its own id
    const c = importInto(a.next, text.replace('"content":"Count to five."', '"content":"Count to six."'), "u.jsonl");
    if (c.kind !== "added") throw new Error("not added");
    expect(new Set(c.next.map((l) => l.session.traceId)).size).toBe(3);
  });

  it("the Manifold draws a live session's own saved copy once", () => {
    const g = syntheticGroup(3, 5);
    const group = (label: string) => ({ ...groupFromSteps(g.fps, g.zones, { label }), kind: KIND.step });
    const saved = [
      { id: "a", name: "saved a", traceId: "trace-live" },
      { id: "b", name: "saved b", traceId: "trace-other" },
    ] as unknown as SavedMeta[];
    const src = { session: group("Live session"), saved, savedPoints: saved.map((m) => ({ id: m.id, fps: g.fps, zones: g.zones })), discovery: null, centroids: null, synthetic: null };
    const labels = (scope: "recent" | "all", id?: string) => scopeGroups(scope, { ...src, sessionTraceId: id }).map((x) => x.owner.label);
    expect(labels("recent")).toEqual(["Live session", "saved a", "saved b"]);
    expect(labels("recent", "trace-live")).toEqual(["Live session", "saved b"]);
    expect(labels("all", "trace-live")).toEqual(["saved b", "Live session"]);
    expect(FINGERPRINT_DIM).toBe(20);
  });

  it("the Manifold's session group carries the session's mean sink mass (shown in the point details)", () => {
    const { s, run } = recorded();
    const g = sessionStepsGroup(s, "Live session")!;
    const perStep = [...run.steps.values()].map((x) => x.raw.reduce((a, r) => a + r.sink_mass!, 0) / x.raw.length);
    expect(g.owner.sinkMass).toBeCloseTo(perStep.reduce((a, b) => a + b, 0) / perStep.length, 12);
    expect(g.owner.sinkMass).toBeGreaterThan(0.05);
  });
});
