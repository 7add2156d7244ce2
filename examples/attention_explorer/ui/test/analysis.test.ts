// Compare / Manifold / Router math against numpy (test/fixtures/make_analysis_expectations.py,
// run with the shipped PCA defaults and sgl_kernel.zones). Regenerate the JSON after changing
// either side; these tests fail when the TypeScript drifts from the Python.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { differenceItems, differenceSentences, FORMULA, pcaDifference, similarity, WEIGHTS } from "../src/analysis/compare";
import { digestOf } from "../src/analysis/digest";
import { parsePcaModel, project2d, projectFlat, readComponents, SHIPPED_PCA } from "../src/analysis/pca";
import { samplingHints, ZONES } from "../src/zones/zones";

interface Reading {
  pc: number;
  name: string;
  score: number;
  z: number;
  strength: string;
  phrase: string;
}
const X = JSON.parse(readFileSync(join(__dirname, "fixtures/analysis_expectations.json"), "utf8")) as {
  weights: { cosine: number; zone_agreement: number; entropy: number };
  runs: Record<string, number[][]>;
  summaries: Record<string, { mean: number[]; zone_share: Record<string, number>; entropy: number; ripple: number }>;
  comparisons: {
    a: string;
    b: string;
    cosine: number;
    zone_agreement: number;
    entropy_diff: number;
    score: number;
    differences: { key: string; a: number; b: number; delta: number }[];
    pca_difference: Reading[];
  }[];
  projections: { name: string; fingerprint: number[]; pcs: Reading[] }[];
  sampling_hints: { name: string; temperature: number; top_p: number; capture_mode: string; zone: string }[];
};
const SHIPPED = JSON.parse(readFileSync(join(__dirname, "../../../../python/sglang/srt/attention_sidecar/data/pca_interpretation.json"), "utf8"));

const digests = Object.fromEntries(Object.entries(X.runs).map(([k, fps]) => [k, digestOf(fps)]));

describe("run digests vs numpy", () => {
  for (const [name, s] of Object.entries(X.summaries)) {
    it(`${name}: mean fingerprint, zone shares, entropy, ripple`, () => {
      const d = digests[name];
      d.mean.forEach((v, i) => expect(v).toBeCloseTo(s.mean[i], 12));
      for (const z of ZONES) expect(d.zoneShare[z]).toBeCloseTo(s.zone_share[z], 12);
      expect(d.entropy).toBeCloseTo(s.entropy, 12);
      expect(d.ripple).toBeCloseTo(s.ripple, 12);
      expect(d.nSteps).toBe(X.runs[name].length);
    });
  }
});

describe("similarity score vs numpy", () => {
  it("uses the documented weights", () => {
    expect(WEIGHTS).toEqual({ cosine: X.weights.cosine, zoneAgreement: X.weights.zone_agreement, entropy: X.weights.entropy });
    expect(FORMULA).toContain("0.5");
  });
  for (const c of X.comparisons) {
    it(`${c.a} vs ${c.b}: score ${c.score.toFixed(4)}`, () => {
      const s = similarity(digests[c.a], digests[c.b]);
      expect(s.cosine).toBeCloseTo(c.cosine, 12);
      expect(s.zoneAgreement).toBeCloseTo(c.zone_agreement, 12);
      expect(s.entropyDiff).toBeCloseTo(c.entropy_diff, 12);
      expect(s.score).toBeCloseTo(c.score, 12);
    });
  }
  it("is symmetric and 1 for the same steps in another order", () => {
    const ab = similarity(digests.local, digests.far).score;
    expect(similarity(digests.far, digests.local).score).toBeCloseTo(ab, 14);
    expect(similarity(digests.local, digests.local_twin).score).toBeCloseTo(1, 12);
  });
});

describe("differences text vs numpy inputs", () => {
  for (const c of X.comparisons) {
    it(`${c.a} vs ${c.b}: ${c.differences.map((d) => d.key).join(", ") || "none"}`, () => {
      const items = differenceItems(digests[c.a], digests[c.b]);
      expect(items.map((i) => i.key)).toEqual(c.differences.map((d) => d.key));
      items.forEach((it, i) => {
        expect(it.a).toBeCloseTo(c.differences[i].a, 12);
        expect(it.b).toBeCloseTo(c.differences[i].b, 12);
        expect(it.delta).toBeCloseTo(c.differences[i].delta, 12);
      });
      const text = differenceSentences(digests[c.a], digests[c.b], [c.a, c.b]);
      // one sentence for the zones, one per item (or the "almost identical" line)
      expect(text.length).toBe(1 + Math.max(1, items.length));
      items.forEach((it, i) => {
        const s = text[i + 1];
        expect(s.startsWith(c.b)).toBe(true);
        if (it.key === "entropy") expect(s).toContain(it.delta > 0 ? "more widely" : "more narrowly");
        else if (it.key === "periodicity") expect(s).toContain(it.delta > 0 ? "more periodic" : "less periodic");
        else {
          expect(s).toContain(`${(it.b * 100).toFixed(0)}% vs ${(it.a * 100).toFixed(0)}%`);
          expect(s).toContain(it.delta > 0 ? "more attention" : "less attention");
        }
      });
    });
  }
  it("names a change of dominant zone", () => {
    const t = differenceSentences(digests.local, digests.bridge);
    expect(t[0]).toMatch(/changes from syntax_floor .* to semantic_bridge/);
    expect(differenceSentences(digests.local, digests.local_twin)[1]).toMatch(/almost identically/);
  });
});

describe("PCA projection vs numpy (shipped defaults)", () => {
  for (const p of X.projections) {
    it(`${p.name}: PC1..PC4 scores, z, strength, phrase`, () => {
      const r = readComponents(p.fingerprint);
      expect(r.length).toBe(p.pcs.length);
      r.forEach((c, i) => {
        expect(c.pc).toBe(p.pcs[i].pc);
        expect(c.name).toBe(p.pcs[i].name);
        expect(c.score).toBeCloseTo(p.pcs[i].score, 10);
        expect(c.z).toBeCloseTo(p.pcs[i].z, 9);
        expect(c.strength).toBe(p.pcs[i].strength);
        expect(c.phrase).toBe(p.pcs[i].phrase);
      });
      const [x, y] = project2d(p.fingerprint);
      expect(x).toBeCloseTo(p.pcs[0].score, 5); // float32 map coordinates
      expect(y).toBeCloseTo(p.pcs[1].score, 5);
    });
  }
  it("projects many fingerprints at once like one by one", () => {
    const flat = new Float64Array(X.projections.flatMap((p) => p.fingerprint));
    const { x, y } = projectFlat(flat, X.projections.length);
    X.projections.forEach((p, i) => {
      expect(x[i]).toBeCloseTo(p.pcs[0].score, 5);
      expect(y[i]).toBeCloseTo(p.pcs[1].score, 5);
    });
  });
  for (const c of X.comparisons) {
    it(`difference ${c.a} -> ${c.b} on PC1..PC4`, () => {
      const r = pcaDifference(digests[c.a], digests[c.b]);
      r.forEach((pc, i) => {
        expect(pc.z).toBeCloseTo(c.pca_difference[i].z, 9);
        expect(pc.strength).toBe(c.pca_difference[i].strength);
        expect(pc.phrase).toBe(c.pca_difference[i].phrase);
      });
    });
  }
  it("uses the shipped file and rejects a malformed model", () => {
    expect(SHIPPED_PCA.mean).toEqual(SHIPPED.mean);
    expect(() => parsePcaModel({ mean: [1, 2], components: [] })).toThrow(/mean must have 20/);
    expect(() => parsePcaModel({ ...SHIPPED, components: [{ loadings: [1] }, { loadings: [1] }] })).toThrow(/loadings must have 20/);
  });
});

describe("Router recommendations = zones.py sampling_hints", () => {
  for (const h of X.sampling_hints) {
    it(`${h.name}: ${h.zone} -> T=${h.temperature} top_p=${h.top_p} capture=${h.capture_mode}`, () => {
      const fp = X.projections.find((p) => p.name === h.name)!.fingerprint;
      expect(samplingHints(fp)).toEqual({ temperature: h.temperature, top_p: h.top_p, capture_mode: h.capture_mode, zone: h.zone });
    });
  }
});
