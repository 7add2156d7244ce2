import { describe, expect, it } from "vitest";
import { linksOf, trueProbs } from "../src/trace/attention";
import type { ChatChunk, RawEntry } from "../src/api/wire";
import { TraceSession } from "../src/trace/session";
import { classify } from "../src/zones/zones";
import { defaultCapture, loadFixture, replay } from "./helpers";

describe("TraceSession from a raw capture stream", () => {
  const fx = loadFixture("chat_raw_think.json");
  const { session, runId } = replay(fx);
  const run = session.run(runId);

  it("builds prompt and output tokens at the right positions", () => {
    expect(run.promptLen).toBe(fx.expect.prompt_len);
    expect(run.promptTokens.map((t) => t.text).join("|")).toBe("|||user| Café?|\n");
    expect(run.promptTokens.map((t) => t.id)).toEqual([null, null, null, 4093, 2343, 198]);
    expect(run.tokens.map((t) => t.text).join("")).toBe(fx.expect.output_text);
    expect(run.tokens.map((t) => t.position)).toEqual([6, 7, 8, 9, 10, 11]);
    expect(session.tokenAt(run, 4)).toMatchObject({ kind: "prompt", token: { text: " Café?" } });
    expect(session.tokenAt(run, 10)).toMatchObject({ kind: "output", token: { step: 4, text: " ☕" } });
    expect(session.tokenAt(run, 99)).toBeNull();
  });

  it("keeps masked prompt tokens marked", () => {
    expect(run.promptTokens.filter((t) => t.masked).map((t) => t.position)).toEqual([0, 1, 2]);
  });

  it("splits reasoning and content text and keeps think/output segments", () => {
    const msg = session.messages.find((m) => m.id === run.messageId)!;
    expect(msg.reasoning).toBe(fx.expect.reasoning);
    expect(msg.content).toBe(fx.expect.content);
    expect(run.segments.map((s) => [s.type, s.startStep, s.endStep])).toEqual([
      ["assistant_think", 0, 2],
      ["assistant_output", 3, 5],
    ]);
    expect(run.tokens.every((t) => run.segments.some((s) => s.id === t.segmentId))).toBe(true);
  });

  it("indexes raw entries by step and layer; prompt attention apart", () => {
    expect(run.steps.size).toBe(6);
    expect(run.layers).toEqual([5, 29]);
    expect(run.steps.get(3)!.raw.map((r) => r.layer_id)).toEqual([5, 29]);
    expect([...run.promptSteps.keys()]).toEqual([4, 5]);
    expect(run.entries.length).toBe(6 * 2 + 2);
  });

  it("computes true probabilities from logits and lse", () => {
    const e = session.rawEntry(run, 2, 5)!;
    const tp = trueProbs(e);
    [0.4, 0.3, 0.1, 0.05].forEach((p, i) => expect(tp[i]).toBeCloseTo(p, 12));
    expect(e.attention_scores.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  it("detects sinks per layer: the first token always, and heavy receivers", () => {
    expect([...session.sinks(run, 5)].sort()).toEqual([0]);
    expect([...session.sinks(run, 29)].sort((a, b) => a - b)).toEqual([0, 4]);
  });

  it("excluding sinks drops them and renormalizes the rest to 1", () => {
    const e = session.rawEntry(run, 1, 5)!;
    const all = linksOf(e, session.sinks(run, 5), false);
    expect(all.map((l) => l.position)).toEqual([0, 6, 4, 3]);
    const kept = linksOf(e, session.sinks(run, 5), true);
    expect(kept.map((l) => l.position)).toEqual([6, 4, 3]);
    expect(kept.reduce((s, l) => s + l.shown, 0)).toBeCloseTo(1, 12);
    expect(kept[0].shown).toBeCloseTo(0.3 / 0.45, 12);
    expect(kept[0].trueProb).toBeCloseTo(0.3, 12); // true probability is absolute
  });

  it("records transport metrics and usage", () => {
    expect(run.metrics.bytesReceived).toBe(new TextEncoder().encode(fx.sse).length);
    expect(run.metrics.attentionBytes).toBeGreaterThan(1000);
    expect(run.metrics.usage?.completion_tokens).toBe(6);
    expect(run.metrics.finishReason).toBe("stop");
    expect(session.summary(run).tokenCount).toBe(6);
  });

  it("estimates a step signal from the top-k and classifies it", () => {
    const sig = session.stepSignal(run, 3)!;
    expect(sig.source).toBe("topk");
    expect(sig.hist.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
    expect(sig.massCaptured).toBeCloseTo((0.85 + 0.9) / 2, 9);
    expect(classify(sig.fingerprint).zone).toBeTypeOf("string");
  });

  it("gives the same session whatever the network splits", () => {
    const a = replay(fx, []);
    const b = replay(fx, Array.from({ length: 200 }, (_, i) => i * 37 + 5));
    const ra = a.session.run(a.runId);
    const rb = b.session.run(b.runId);
    expect(rb.entries).toEqual(ra.entries);
    expect(rb.tokens).toEqual(ra.tokens.map((t) => ({ ...t, segmentId: t.segmentId.replace(a.runId, b.runId) })));
  });
});

describe("TraceSession, sketch / MoE and fingerprint modes", () => {
  it("reads sketches per layer, MoE routing, and an exact fingerprint from the sketch", () => {
    const fx = loadFixture("chat_sketch_moe.json");
    const { session, runId } = replay(fx);
    const run = session.run(runId);
    expect(run.layers).toEqual([3, 7]);
    expect(run.steps.get(1)!.moe!["3"]).toEqual({ experts: [5, 2], weights: [0.7, 0.3] });
    const sig = session.stepSignal(run, 1)!;
    expect(sig.source).toBe("sketch");
    expect(sig.fingerprint[0]).toBeCloseTo(1, 12); // all mass within distance < 8
    expect(sig.fingerprint[3]).toBeCloseTo(0.9 / Math.log(5), 12); // mean entropy / ln(query_position + 1)
    expect(classify(sig.fingerprint).zone).toBe("syntax_floor");
    expect(run.metrics.finishReason).toBe("length");
  });

  it("infers the prompt length from query_position when no prompt tokens are sent", () => {
    const fx = loadFixture("chat_fingerprint.json");
    const { session, runId } = replay(fx);
    const run = session.run(runId);
    expect(run.promptLen).toBe(5);
    expect(run.tokens.map((t) => t.position)).toEqual([5, 6]);
    const s = session.summary(run);
    expect(s.zoneCounts).toEqual({ syntax_floor: 1, semantic_bridge: 1 });
    expect(session.stepSignal(run, 0)!.source).toBe("server");
  });
});

describe("TraceSession, other inputs", () => {
  it("ingests a non-streaming response (all entries on choices[0])", () => {
    const s = new TraceSession();
    s.batchWithAnimationFrame = false;
    const m = s.addMessage("assistant", "");
    const run = s.startRun({ messageId: m.id, model: "m", capture: defaultCapture, sampling: { maxTokens: 2, temperature: 0, topP: 1 } });
    const e = (step: number): RawEntry => ({
      layer_id: 0, decode_step: step, query_position: 2 + step, token_positions: [0], attention_scores: [1], topk_logits: [0], logsumexp_candidates: 0,
    });
    const resp: ChatChunk = {
      choices: [{
        index: 0, message: { role: "assistant", content: "ab" }, finish_reason: "stop",
        attention_tokens: [e(0), e(1)], attention_output_tokens: [{ step: 0, id: 1, text: "a" }, { step: 1, id: 2, text: "b" }],
      }],
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    };
    s.ingestChunk(run.id, resp);
    expect(run.promptLen).toBe(3);
    expect(run.tokens.map((t) => t.position)).toEqual([3, 4]);
    expect(s.messages[0].content).toBe("ab");
  });

  it("keeps text as pseudo-tokens when the server sends no capture", () => {
    const s = new TraceSession();
    s.batchWithAnimationFrame = false;
    const m = s.addMessage("assistant", "");
    const run = s.startRun({ messageId: m.id, model: "m", capture: defaultCapture, sampling: { maxTokens: 2, temperature: 0, topP: 1 } });
    s.ingestChunk(run.id, { choices: [{ index: 0, delta: { content: "Hel" } }] });
    s.ingestChunk(run.id, { choices: [{ index: 0, delta: { content: "lo" } }] });
    expect(run.tokens.map((t) => [t.step, t.text, t.id])).toEqual([[0, "Hel", null], [1, "lo", null]]);
    expect(m.content).toBe("Hello");
  });

  it("holds several runs and sends only the non-superseded conversation", () => {
    const s = new TraceSession();
    s.batchWithAnimationFrame = false;
    s.addMessage("user", "q");
    const a1 = s.addMessage("assistant", "first");
    s.startRun({ messageId: a1.id, model: "m", capture: defaultCapture, sampling: { maxTokens: 1, temperature: 0, topP: 1 } });
    a1.superseded = true;
    const a2 = s.addMessage("assistant", "second");
    const r2 = s.startRun({ messageId: a2.id, model: "m", capture: defaultCapture, sampling: { maxTokens: 1, temperature: 0, topP: 1 } });
    expect(s.runs.size).toBe(2);
    expect(s.latestRun()!.id).toBe(r2.id);
    expect(s.conversation()).toEqual([{ role: "user", content: "q" }, { role: "assistant", content: "second" }]);
  });

  it("notifies subscribers on change", () => {
    const s = new TraceSession();
    s.batchWithAnimationFrame = false;
    let n = 0;
    const off = s.subscribe(() => n++);
    s.addMessage("user", "x");
    off();
    s.addMessage("user", "y");
    expect(n).toBe(1);
    expect(s.getVersion()).toBe(2);
  });
});
