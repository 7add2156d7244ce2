// The TypeScript zone classifier must agree with sgl_kernel/zones.py on its JSON vectors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { binOfDistance, classify, ripple, THRESHOLDS, traits, validateFingerprint } from "../src/zones/zones";

const VECTORS = join(__dirname, "../../../../sgl-kernel/python/sgl_kernel/data/zone_test_vectors.json");
const data = JSON.parse(readFileSync(VECTORS, "utf8")) as {
  version: number;
  thresholds: Record<string, number>;
  vectors: { name: string; fingerprint: number[]; zone: string; confidence: number; ripple: number; traits: string[] }[];
};

describe("zone classifier vs Python vectors", () => {
  it("uses the same thresholds", () => {
    expect(THRESHOLDS).toEqual(data.thresholds);
  });
  it("has vectors for every zone", () => {
    expect(new Set(data.vectors.map((v) => v.zone))).toEqual(
      new Set(["syntax_floor", "semantic_bridge", "long_range", "structure_ripple", "diffuse"]),
    );
  });
  for (const v of data.vectors) {
    it(`${v.name}: zone ${v.zone}, confidence ${v.confidence}`, () => {
      const r = classify(v.fingerprint);
      expect(r.zone).toBe(v.zone);
      expect(r.confidence).toBeCloseTo(v.confidence, 6);
      expect(ripple(v.fingerprint.slice(4))).toBeCloseTo(v.ripple, 9);
      expect(traits(v.fingerprint)).toEqual(v.traits);
    });
  }
});

describe("fingerprint helpers", () => {
  it("bins distances as the capture does", () => {
    expect([0, 1, 2, 3, 4, 7, 8, 255, 256, 32767, 32768, 1e6].map(binOfDistance)).toEqual([0, 0, 1, 1, 2, 2, 3, 7, 8, 14, 15, 15]);
  });
  it("rejects malformed fingerprints with a message", () => {
    expect(() => validateFingerprint([1, 2])).toThrow(/20 values/);
    expect(() => validateFingerprint(new Array(20).fill(NaN))).toThrow(/NaN/);
    expect(() => validateFingerprint("x")).toThrow(/list of 20/);
  });
});
