import { describe, expect, it } from "vitest";
import { adaptiveConfigOf, buildChatRequest } from "../src/api/client";
import { captureProblemOf } from "../src/state/connection";
import { parseExtra, parseLayers } from "../src/state/settings";

const capture = { mode: "sketch" as const, topK: 16, layers: [3, 7], headIds: [0, 2], maskSystemPrompt: true, maskPrefix: 4, includePromptAttention: true };
const sampling = { maxTokens: 64, temperature: 0.2, topP: 0.9 };

describe("chat request", () => {
  it("carries every capture field of the contract", () => {
    const body = buildChatRequest({ model: "m", messages: [{ role: "user", content: "hi" }], capture, sampling, captureEnabled: true, extra: { ignore_eos: true } });
    expect(body).toEqual({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 64,
      temperature: 0.2,
      top_p: 0.9,
      return_attention_tokens: true,
      top_k_attention: 16,
      attention_sketch_mode: true,
      attention_fingerprint_mode: false,
      attention_capture_layers: [3, 7],
      attention_capture_head_ids: [0, 2],
      attention_mask_prefix: 4,
      attention_mask_system_prompt: true,
      include_prompt_attention: true,
      ignore_eos: true,
    });
  });
  it("sends no capture field when capture is off", () => {
    const body = buildChatRequest({ model: "m", messages: [], capture, sampling, captureEnabled: false });
    expect(Object.keys(body).filter((k) => k.includes("attention"))).toEqual([]);
  });
});

describe("connection messages", () => {
  it("says clearly when capture is disabled", () => {
    expect(captureProblemOf({ supported: false }, null)).toMatch(/capture disabled/);
    expect(captureProblemOf({ supported: true, guardrails: { disabled_in_production: true } }, null)).toMatch(/production/);
    expect(captureProblemOf(null, "HTTP 404")).toBe("HTTP 404");
    expect(captureProblemOf({ supported: true }, null)).toBeNull();
  });
});

describe("settings parsing", () => {
  it("parses layers and extra fields, rejecting bad input with a message", () => {
    expect(parseLayers("last")).toBe("last");
    expect(parseLayers(" 0, 10,20 ")).toEqual([0, 10, 20]);
    expect(parseLayers("1,x")).toBeNull();
    expect(parseExtra('{"ignore_eos": true}')).toEqual({ ok: true, value: { ignore_eos: true } });
    expect(parseExtra("[1]")).toMatchObject({ ok: false });
    expect(parseExtra("{")).toMatchObject({ ok: false });
  });
});

describe("adaptive sampling request", () => {
  const base = { model: "m", messages: [{ role: "user", content: "hi" }], sampling, captureEnabled: true };
  const caps = { supported: true, adaptive_sampling: { supported: true, default: false, steps: 8 } };
  it("is sent only with fingerprint capture", () => {
    const fp = buildChatRequest({ ...base, capture: { ...capture, mode: "fingerprint" }, adaptiveSampling: true });
    expect(fp.attention_adaptive_sampling).toBe(true);
    expect(buildChatRequest({ ...base, capture, adaptiveSampling: true }).attention_adaptive_sampling).toBeUndefined();
    expect(buildChatRequest({ ...base, capture: { ...capture, mode: "fingerprint" }, adaptiveSampling: false }).attention_adaptive_sampling).toBeUndefined();
    expect(buildChatRequest({ ...base, captureEnabled: false, capture: { ...capture, mode: "fingerprint" }, adaptiveSampling: true }).attention_adaptive_sampling).toBeUndefined();
  });
  it("records whether the run had it on: the request's field, else the server default (fingerprint only)", () => {
    const fp = buildChatRequest({ ...base, capture: { ...capture, mode: "fingerprint" }, adaptiveSampling: true });
    expect(adaptiveConfigOf(fp, caps)).toEqual({ enabled: true, source: "request", steps: 8 });
    const plain = buildChatRequest({ ...base, capture: { ...capture, mode: "fingerprint" } });
    expect(adaptiveConfigOf(plain, caps)).toEqual({ enabled: false, source: "server_default", steps: 8 });
    const on = { ...caps, adaptive_sampling: { ...caps.adaptive_sampling, default: true } };
    expect(adaptiveConfigOf(plain, on)).toEqual({ enabled: true, source: "server_default", steps: 8 });
    expect(adaptiveConfigOf(buildChatRequest({ ...base, capture }), on)).toEqual({ enabled: false, source: "server_default", steps: 8 });
    // through the extra fields, and with no capabilities known
    const extra = buildChatRequest({ ...base, capture: { ...capture, mode: "fingerprint" }, extra: { attention_adaptive_sampling: false } });
    expect(adaptiveConfigOf(extra, null)).toEqual({ enabled: false, source: "request", steps: null });
    expect(adaptiveConfigOf(buildChatRequest({ ...base, captureEnabled: false, capture }), caps)).toBeNull();
  });
});
