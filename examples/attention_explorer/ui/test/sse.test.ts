import { describe, expect, it } from "vitest";
import { decodeAll, SseDecoder } from "../src/api/sse";
import { loadFixture, slices } from "./helpers";

const FIXTURES = ["chat_raw_think.json", "chat_sketch_moe.json", "chat_fingerprint.json"];

describe("SSE decoding", () => {
  for (const name of FIXTURES) {
    const fx = loadFixture(name);
    const whole = decodeAll([fx.sse]);

    it(`${name}: whole body decodes to chunks then [DONE]`, () => {
      expect(whole.filter((i) => i.kind === "error")).toEqual([]);
      expect(whole[whole.length - 1]).toEqual({ kind: "done" });
      expect(whole.filter((i) => i.kind === "chunk").length).toBeGreaterThan(1);
    });

    it(`${name}: the recorded network splits give the same items`, () => {
      expect(decodeAll(slices(fx))).toEqual(whole);
    });

    it(`${name}: a split at every single byte offset gives the same items`, () => {
      const n = new TextEncoder().encode(fx.sse).length;
      for (let cut = 1; cut < n; cut++) {
        const got = decodeAll(slices(fx, [cut]));
        if (JSON.stringify(got) !== JSON.stringify(whole)) throw new Error(`split at byte ${cut} changed the result`);
      }
    });

    it(`${name}: one byte at a time gives the same items`, () => {
      const n = new TextEncoder().encode(fx.sse).length;
      expect(decodeAll(slices(fx, Array.from({ length: n - 1 }, (_, i) => i + 1)))).toEqual(whole);
    });
  }

  it("keeps multi-byte characters split across reads", () => {
    const fx = loadFixture("chat_raw_think.json");
    const buf = new TextEncoder().encode(fx.sse);
    const cup = new TextEncoder().encode("☕");
    let at = -1;
    for (let i = 0; i < buf.length && at < 0; i++) if (buf[i] === cup[0] && buf[i + 1] === cup[1]) at = i;
    const items = decodeAll(slices(fx, [at + 1, at + 2]));
    const texts = items.flatMap((i) => (i.kind === "chunk" ? i.chunk.choices.flatMap((c) => c.attention_output_tokens ?? []) : []));
    expect(texts.map((t) => t.text)).toContain(" ☕");
  });

  it("counts received bytes exactly", () => {
    const fx = loadFixture("chat_sketch_moe.json");
    const d = new SseDecoder();
    for (const s of slices(fx)) d.push(s);
    d.end();
    expect(d.bytes).toBe(new TextEncoder().encode(fx.sse).length);
  });

  it("reports bad JSON and server error events without throwing", () => {
    const items = decodeAll([
      'data: {"choices": [\n\n',
      'data: {"error": {"message": "top_k_attention must be in 1..64", "param": "top_k_attention"}}\n\n',
      "data: [DONE]\n\n",
    ]);
    expect(items.map((i) => i.kind)).toEqual(["error", "error", "done"]);
    expect(items[1].kind === "error" && items[1].message).toContain("top_k_attention");
  });

  it("accepts CRLF line endings and a last event without its blank line", () => {
    const items = decodeAll(['data: {"choices":[]}\r\n\r\n', 'data: {"choices":[{"index":0}]}']);
    expect(items.map((i) => i.kind)).toEqual(["chunk", "chunk"]);
  });
});
