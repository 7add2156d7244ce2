// Manifold data building (browser PCA path, sidecar map with discovery points) and the
// one-shot Router override.
import { afterEach, describe, expect, it, vi } from "vitest";
import { digestOf } from "../src/analysis/digest";
import { projectFlat, SHIPPED_PCA } from "../src/analysis/pca";
import { type ClassifyResult, type DiscoveryPoints, SidecarClient } from "../src/api/sidecar";
import { buildSet, centroidGroup, discoveryGroup, groupFromSteps, KIND, savedMeans, syntheticGroup } from "../src/manifold/build";
import { FADED, NOISE, PALETTE } from "../src/manifold/PointCloud";
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

/** A /discovery/points answer as the sidecar sends it (columnar). */
function pointsResponse(): DiscoveryPoints {
  return {
    run_id: 3,
    format: "sglang-discovery/1",
    manifest_sha256: "abc",
    total: 5,
    offset: 0,
    limit: 100000,
    count: 5,
    x: [0.5, -1.25, 2, 3.5, 10.125],
    y: [1, 2, -3, 0.25, 7],
    label: [0, 1, -1, 0, -1],
    zone: ["syntax_floor", "long_range", "diffuse", "syntax_floor", "unknown"],
    request_id: ["r1", "r1", "r2", null, "r3"],
    session_id: [null, null, "s", null, null],
    step: [0, 1, 0, null, 4],
  };
}

/** A sidecar client whose /classify places every vector at (100 + k, -100 - k), cluster 7, long_range. */
function fakeSidecar() {
  const calls: number[][][] = [];
  const client = {
    classify: async (vectors: number[][]) => {
      calls.push(vectors);
      return vectors.map((_, k) => ({ x: 100 + k, y: -100 - k, cluster_id: 7, zone: "long_range" }) as ClassifyResult);
    },
  } as unknown as SidecarClient;
  return { client, calls };
}

describe("discovery points (sidecar /discovery/points)", () => {
  it("maps the columnar answer to one group: fixed coordinates, clusters, zones, faded colours, steps, ids", () => {
    const p = pointsResponse();
    const g = discoveryGroup(p)!;
    expect(g.kind).toBe(KIND.discovery);
    expect(Array.from(g.fixedXY!)).toEqual([0.5, 1, -1.25, 2, 2, -3, 3.5, 0.25, 10.125, 7]);
    expect(Array.from(g.clusters!)).toEqual([0, 1, -1, 0, -1]);
    const zi = (z: string) => ZONES.indexOf(z as (typeof ZONES)[number]);
    // zones: the point's zone (noise keeps its own zone; an unknown one is NOISE)
    expect(Array.from(g.zones)).toEqual([zi("syntax_floor"), zi("long_range"), zi("diffuse"), zi("syntax_floor"), NOISE]);
    // colours: the faded tint of the zone, faded grey for noise whatever its zone
    expect(Array.from(g.colors!)).toEqual([FADED + zi("syntax_floor"), FADED + zi("long_range"), FADED + NOISE, FADED + zi("syntax_floor"), FADED + NOISE]);
    expect(Array.from(g.steps!)).toEqual([0, 1, 0, -1, 4]);
    expect(g.fps.length).toBe(0);
    expect(g.owner).toEqual({ label: "discovery run 3", discovery: { runId: 3, zone: p.zone, requestId: p.request_id, sessionId: p.session_id } });
    for (const c of g.colors!) expect(PALETTE[c]).toBeDefined();
  });

  it("works without the optional id columns, and is empty for an empty page", () => {
    const p = pointsResponse();
    delete p.request_id;
    delete p.session_id;
    delete p.step;
    const g = discoveryGroup(p)!;
    expect(g.steps).toBeUndefined();
    expect(g.owner.discovery!.requestId).toBeUndefined();
    expect(discoveryGroup({ ...p, count: 0, x: [], y: [], label: [], zone: [] })).toBeNull();
  });

  it("refuses columns of different lengths", () => {
    expect(() => discoveryGroup({ ...pointsResponse(), label: [0, 1] })).toThrow(/label has 2 values, x has 5/);
    expect(() => discoveryGroup({ ...pointsResponse(), step: [1] })).toThrow(/step has 1 values/);
  });

  it("buildSet keeps discovery points at their coordinates and classifies only the session's steps", async () => {
    const p = pointsResponse();
    const steps = syntheticGroup(3, 5);
    const session = groupFromSteps(steps.fps, steps.zones, { label: "live" }, new Int32Array([0, 1, 2]));
    const cg = centroidGroup([
      { cluster_id: 0, size: 100, centroid: Array(20).fill(0.05), centroid_2d: [1, 1], radius: 1, zone: "syntax_floor", zone_confidence: 1, traits: [], sampling_hints: { temperature: 0.3, top_p: 0.9, capture_mode: "fingerprint" } },
    ])!;
    const { client, calls } = fakeSidecar();
    const set = await buildSet([discoveryGroup(p)!, session, cg], SHIPPED_PCA, client);
    expect(set.projection).toBe("sidecar");
    expect(set.data.n).toBe(5 + 3 + 1);
    expect(set.discoveryCount).toBe(5);
    expect(Array.from(set.starts)).toEqual([0, 5, 8]);
    // only the 3 session steps went to /classify, as one batch
    expect(calls.map((c) => c.length)).toEqual([3]);
    expect(calls[0][0]).toEqual(Array.from(steps.fps.subarray(0, 20)));
    // discovery points: exactly the sidecar's coordinates (float32), cluster and faded colour
    expect(Array.from(set.data.x.subarray(0, 5))).toEqual(Array.from(new Float32Array(p.x)));
    expect(Array.from(set.data.y.subarray(0, 5))).toEqual(Array.from(new Float32Array(p.y)));
    expect(Array.from(set.cluster.subarray(0, 5))).toEqual(p.label);
    expect(Array.from(set.kind.subarray(0, 5))).toEqual(Array(5).fill(KIND.discovery));
    expect(set.data.color[2]).toBe(FADED + NOISE);
    expect(Array.from(set.step.subarray(0, 5))).toEqual([0, 1, 0, -1, 4]);
    // session steps: where /classify put them, full colour of the sidecar's zone
    expect(Array.from(set.data.x.subarray(5, 8))).toEqual([100, 101, 102]);
    expect(Array.from(set.data.y.subarray(5, 8))).toEqual([-100, -101, -102]);
    expect(Array.from(set.data.color.subarray(5, 8))).toEqual(Array(3).fill(ZONES.indexOf("long_range")));
    expect(Array.from(set.cluster.subarray(5, 8))).toEqual([7, 7, 7]);
    // the centroid at its centroid_2d, larger than the points
    expect([set.data.x[8], set.data.y[8]]).toEqual([1, 1]);
    expect(set.data.size[8]).toBeGreaterThan(set.data.size[0]);
    expect(set.owners[set.ownerIdx[2]].discovery!.requestId![2 - set.starts[0]]).toBe("r2");
  });
});

describe("SidecarClient.discoveryPoints", () => {
  afterEach(() => vi.unstubAllGlobals());
  it("asks for limit and offset and returns the body; an error body becomes the message", async () => {
    const urls: string[] = [];
    vi.stubGlobal("fetch", async (url: string) => {
      urls.push(url);
      if (url.includes("limit=-1")) {
        return new Response(JSON.stringify({ error: { message: "'limit' must be an integer", param: "limit" } }), { status: 400 });
      }
      return new Response(JSON.stringify(pointsResponse()), { status: 200 });
    });
    const c = new SidecarClient("http://side:9010/");
    expect((await c.discoveryPoints()).total).toBe(5);
    await c.discoveryPoints(10, 20);
    expect(urls).toEqual(["http://side:9010/discovery/points?limit=100000&offset=0", "http://side:9010/discovery/points?limit=10&offset=20"]);
    await expect(c.discoveryPoints(-1)).rejects.toThrow(/HTTP 400: 'limit' must be an integer \(field: limit\)/);
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
