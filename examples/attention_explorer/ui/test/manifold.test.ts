// Manifold data building (browser PCA path) and the one-shot Router override.
import { describe, expect, it } from "vitest";
import { digestOf } from "../src/analysis/digest";
import { projectFlat } from "../src/analysis/pca";
import { buildSet, groupFromSteps, KIND, savedMeans, syntheticGroup } from "../src/manifold/build";
import { withApply } from "../src/state/routerApply";
import { defaultSettings } from "../src/state/settings";
import type { SavedMeta } from "../src/storage/savedSessions";
import { ZONES } from "../src/zones/zones";

describe("manifold set (no sidecar: shipped PCA)", () => {
  it("concatenates groups in order and places them at PC1/PC2", async () => {
    const steps = syntheticGroup(50, 7);
    const fp = Array.from(steps.fps.subarray(0, 20));
    const meta = { id: "saved-1", name: "one", digest: digestOf([fp]) } as unknown as SavedMeta;
    const own = groupFromSteps(steps.fps, steps.zones, { label: "live" });
    const set = await buildSet([own, ...savedMeans([meta])], (await import("../src/analysis/pca")).SHIPPED_PCA, null);
    expect(set.projection).toBe("pca");
    expect(set.data.n).toBe(51);
    const want = projectFlat(steps.fps, 50);
    expect(Array.from(set.data.x.subarray(0, 50))).toEqual(Array.from(want.x));
    expect(Array.from(set.data.y.subarray(0, 50))).toEqual(Array.from(want.y));
    // the saved session is one larger point at its mean, owned by its id, coloured by its dominant zone
    expect(set.kind[50]).toBe(KIND.session);
    expect(set.owners[set.ownerIdx[50]].savedId).toBe("saved-1");
    expect(set.data.size[50]).toBeGreaterThan(set.data.size[0]);
    expect(set.data.color[50]).toBe(ZONES.indexOf(meta.digest.dominantZone!));
    expect(set.data.x[50]).toBeCloseTo(want.x[0], 5);
  });
  it("synthetic points are deterministic and valid fingerprints", () => {
    const a = syntheticGroup(200, 3);
    const b = syntheticGroup(200, 3);
    expect(Array.from(a.fps)).toEqual(Array.from(b.fps));
    for (let i = 0; i < 200; i++) {
      const hist = a.fps.subarray(i * 20 + 4, i * 20 + 20);
      expect(hist.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
    }
  });
});

describe("Apply to next run", () => {
  it("overrides temperature, top_p and capture mode of one request without touching the rest", () => {
    const s = defaultSettings();
    const out = withApply(s, { zone: "syntax_floor", temperature: 0.3, top_p: 0.9, capture_mode: "fingerprint", basis: "x", appliedAt: "" });
    expect(out.sampling).toEqual({ ...s.sampling, temperature: 0.3, topP: 0.9 });
    expect(out.capture).toEqual({ ...s.capture, mode: "fingerprint" });
    expect(s.capture.mode).toBe("raw");
    expect(withApply(s, null)).toBe(s);
  });
});
