// The TypeScript zone classifier must agree with sgl_kernel/zones.py on its JSON vectors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  binOfDistance,
  classify,
  FOCUSED_ENTROPY,
  FOCUSED_ENTROPY_V2,
  ripple,
  samplingHints,
  THRESHOLDS,
  THRESHOLDS_V2,
  thresholdsFor,
  traits,
  validateFingerprint,
} from "../src/zones/zones";

const VECTORS = join(__dirname, "../../../../sgl-kernel/python/sgl_kernel/data/zone_test_vectors.json");
type Vector = { name: string; fingerprint: number[]; zone: string; confidence: number; ripple: number; traits: string[] };
const data = JSON.parse(readFileSync(VECTORS, "utf8")) as {
  version: number;
  thresholds: Record<string, number>;
  vectors: Vector[];
  focused_entropy: number;
  thresholds_v2: Record<string, number>;
  focused_entropy_v2: number;
  vectors_v2: Vector[];
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

describe("version-2 (sink-aware) fingerprints vs Python vectors", () => {
  it("uses the same re-derived thresholds", () => {
    expect(THRESHOLDS_V2).toEqual(data.thresholds_v2);
    expect(FOCUSED_ENTROPY_V2).toBe(data.focused_entropy_v2);
    expect(FOCUSED_ENTROPY).toBe(data.focused_entropy);
    expect(thresholdsFor(2).thresholds).toBe(THRESHOLDS_V2);
    expect(() => thresholdsFor(3)).toThrow(/version/);
  });
  it("has vectors for every zone", () => {
    expect(new Set(data.vectors_v2.map((v) => v.zone)).size).toBe(5);
  });
  let changed = 0;
  for (const v of data.vectors_v2) {
    it(`v2 ${v.name}: zone ${v.zone}, confidence ${v.confidence}`, () => {
      const r = classify(v.fingerprint, 2);
      expect(r.zone).toBe(v.zone);
      expect(r.confidence).toBeCloseTo(v.confidence, 6);
      expect(traits(v.fingerprint, 2)).toEqual(v.traits);
      expect(samplingHints(v.fingerprint, 2).zone).toBe(v.zone);
      if (classify(v.fingerprint, 1).zone !== v.zone) changed++;
    });
  }
  it("reads some fingerprints differently from version 1", () => {
    expect(changed).toBeGreaterThanOrEqual(3);
  });
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
