// Responses recorded from the real server, replayed through the same code the live chat uses.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeAll } from "../src/api/sse";
import type { CaptureMode } from "../src/api/wire";
import { validateEntry } from "../src/api/wire";
import { exportTrace, importTrace } from "../src/trace/jsonl";
import { TraceSession } from "../src/trace/session";
import { classify } from "../src/zones/zones";
import { defaultCapture } from "./helpers";

const dir = join(__dirname, "fixtures", "recorded");

function load(file: string, mode: CaptureMode) {
  const items = decodeAll([readFileSync(join(dir, file))]);
  const s = new TraceSession();
  s.batchWithAnimationFrame = false;
  s.addMessage("user", "Count to five.");
  const m = s.addMessage("assistant", "");
  const run = s.startRun({ messageId: m.id, model: "SmolLM2-135M-Instruct", capture: { ...defaultCapture, mode }, sampling: { maxTokens: 8, temperature: 0, topP: 1 } });
  for (const it of items) if (it.kind === "chunk") s.ingestChunk(run.id, it.chunk);
  s.finishRun(run.id, "done");
  return { s, run, items };
}

describe("recorded server responses", () => {
  it("raw with masked system prompt and prompt attention", () => {
    const { s, run, items } = load("raw_masked_prompt_attention.sse", "raw");
    expect(items.filter((i) => i.kind === "error")).toEqual([]);
    expect(run.entries.every((e) => validateEntry(e) === null)).toBe(true);
    expect(run.layers).toEqual([0, 29]);
    expect(run.tokens).toHaveLength(6);
    const masked = run.promptTokens.filter((t) => t.masked);
    expect(masked.length).toBeGreaterThan(0);
    // masked positions never appear as attended positions
    const maskedPos = new Set(masked.map((t) => t.position));
    for (const e of run.entries) if ("token_positions" in e) expect(e.token_positions.some((p) => maskedPos.has(p))).toBe(false);
    expect(run.promptSteps.size).toBeGreaterThan(0);
    expect(exportTrace(importTrace(exportTrace(s)))).toBe(exportTrace(s));
  });

  it("the fingerprint the UI derives from sketches equals the server's fingerprint", () => {
    const sk = load("sketch_auto_layers.sse", "sketch");
    const fp = load("fingerprint_auto_layers.sse", "fingerprint");
    expect(sk.run.tokens.map((t) => t.text)).toEqual(fp.run.tokens.map((t) => t.text));
    expect(fp.run.steps.size).toBe(8);
    for (const [step, sc] of fp.run.steps) {
      const server = sc.fingerprint!;
      const derived = sk.s.stepSignal(sk.run, step)!;
      expect(derived.source).toBe("sketch");
      derived.fingerprint.forEach((v, i) => expect(v).toBeCloseTo(server.fingerprint[i], 4));
      // and the TypeScript classifier agrees with the server's zone
      const z = classify(server.fingerprint);
      expect(z.zone).toBe(server.manifold);
      expect(z.confidence).toBeCloseTo(server.manifold_confidence, 5);
    }
  });

  it("a non-streaming response fills the same model", () => {
    const j = JSON.parse(readFileSync(join(dir, "nonstream_raw.json"), "utf8"));
    const s = new TraceSession();
    s.batchWithAnimationFrame = false;
    const m = s.addMessage("assistant", "");
    const run = s.startRun({ messageId: m.id, model: "m", capture: defaultCapture, sampling: { maxTokens: 4, temperature: 0, topP: 1 } });
    s.ingestChunk(run.id, j);
    expect(run.steps.size).toBe(4);
    expect(run.tokens.map((t) => t.text).join("")).toBe(m.content);
  });
});
