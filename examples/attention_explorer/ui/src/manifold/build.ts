// Builds what the Manifold draws for a scope: fingerprints gathered from the active session,
// saved sessions (IndexedDB) and the sidecar's clusters, then placed on the 2-D map either
// by the sidecar (/classify x, y: the discovery run's UMAP map) or by the shipped PCA (PC1, PC2).
// The discovery run's own training points (/discovery/points) come with their map position.
import { digestOf } from "../analysis/digest";
import { type PcaModel, projectFlat } from "../analysis/pca";
import type { DiscoveryPoints, SidecarClient, SidecarCluster } from "../api/sidecar";
import type { SavedMeta, SavedPoints } from "../storage/savedSessions";
import { FINGERPRINT_DIM, ZONES } from "../zones/zones";
import { type CloudData, FADED, NOISE } from "./PointCloud";

export type Scope = "session" | "recent" | "saved" | "all";
export const SCOPES: { id: Scope; label: string }[] = [
  { id: "session", label: "This session's steps" },
  { id: "recent", label: "Recent (this session + last 5 saved)" },
  { id: "saved", label: "Saved sessions (one point each)" },
  { id: "all", label: "All (saved steps + discovery points and clusters)" },
];

export const KIND = { step: 0, session: 1, centroid: 2, synthetic: 3, discovery: 4 } as const;
export type Kind = (typeof KIND)[keyof typeof KIND];

export interface Owner {
  label: string;
  savedId?: string;
  /** Mean server sink_mass of the owner's steps (a quantity of its own, not in the fingerprint); null/absent: none sent. */
  sinkMass?: number | null;
  /** Per point of a discovery group (index within the group): what the sidecar knows of it. */
  discovery?: { runId: number | null; zone: string[]; requestId?: (string | null)[]; sessionId?: (string | null)[] };
}

/** One group of fingerprints from one owner. */
export interface Group {
  fps: Float32Array;
  zones: Uint8Array;
  kind: Kind;
  owner: Owner;
  steps?: Int32Array;
  /** cluster id per point when known (centroids) */
  clusters?: Int32Array;
  /** point half-size; default by kind */
  sizes?: Uint8Array;
  /** palette index per point; default the zone */
  colors?: Uint8Array;
  /** fixed map position, interleaved x, y (centroids' centroid_2d, discovery points): no /classify */
  fixedXY?: Float32Array;
  /** fingerprint version per point (1 or 2); absent: all version 1 */
  versions?: Uint8Array;
  /** the point's own server sink_mass (a step's mean over its layers); NaN or absent: none */
  sinkMasses?: Float32Array;
}

export interface ManifoldSet {
  data: CloudData;
  fps: Float32Array;
  kind: Uint8Array;
  ownerIdx: Int32Array;
  owners: Owner[];
  step: Int32Array;
  cluster: Int32Array;
  zone: Uint8Array;
  /** First point of each owner (group). */
  starts: Int32Array;
  /** Points of discovery groups (KIND.discovery). */
  discoveryCount: number;
  /** Fingerprint version of each point (1 or 2; 1 where unknown). */
  version: Uint8Array;
  /** Each point's own server sink_mass (NaN: none). */
  sinkMass: Float32Array;
  projection: "sidecar" | "pca";
  /** Version of the shipped PCA that placed the points (null: the sidecar's interpretation). */
  pcaVersion?: 1 | 2 | null;
}

/** 2 when every fingerprint point of the groups (steps, session means) is version 2, else 1. */
export function groupsVersion(groups: Group[]): 1 | 2 {
  let n = 0;
  for (const g of groups) {
    if (g.kind !== KIND.step && g.kind !== KIND.session) continue;
    for (let i = 0; i < g.zones.length; i++) {
      if (g.versions?.[i] !== 2) return 1;
      n += 1;
    }
  }
  return n > 0 ? 2 : 1;
}

const SIZE: Record<Kind, number> = { 0: 1, 1: 4, 2: 5, 3: 1, 4: 1 };

export function groupFromSteps(
  fps: Float32Array,
  zones: Uint8Array,
  owner: Owner,
  steps?: Int32Array,
  perPoint: { versions?: Uint8Array; sinkMasses?: Float32Array } = {},
): Group {
  const g: Group = { fps, zones, kind: KIND.step, owner, steps };
  if (perPoint.versions) g.versions = perPoint.versions;
  if (perPoint.sinkMasses) g.sinkMasses = perPoint.sinkMasses;
  return g;
}

/** One point per saved session at its mean fingerprint. */
export function savedMeans(saved: SavedMeta[]): Group[] {
  return saved.map((m) => ({
    fps: new Float32Array(m.digest.mean),
    zones: new Uint8Array([m.digest.dominantZone ? ZONES.indexOf(m.digest.dominantZone) : NOISE]),
    kind: KIND.session,
    owner: { label: m.name, savedId: m.id, sinkMass: m.digest?.sinkMass ?? null },
    versions: new Uint8Array([m.digest?.version === 2 ? 2 : 1]),
  }));
}

export function savedSteps(points: SavedPoints[], saved: SavedMeta[]): Group[] {
  const byId = new Map(saved.map((m) => [m.id, m]));
  return points
    .filter((p) => byId.has(p.id))
    .map((p) =>
      groupFromSteps(p.fps, p.zones, { label: byId.get(p.id)!.name, savedId: p.id, sinkMass: byId.get(p.id)!.digest?.sinkMass ?? null }, undefined, {
        versions: p.versions,
        sinkMasses: p.sinkMasses,
      }),
    );
}

export function centroidGroup(clusters: SidecarCluster[]): Group | null {
  if (!clusters.length) return null;
  const n = clusters.length;
  const fps = new Float32Array(n * FINGERPRINT_DIM);
  const zones = new Uint8Array(n);
  const ids = new Int32Array(n);
  const sizes = new Uint8Array(n);
  const xy = new Float32Array(n * 2);
  clusters.forEach((c, i) => {
    fps.set(c.centroid, i * FINGERPRINT_DIM);
    const zi = ZONES.indexOf(c.zone as (typeof ZONES)[number]);
    zones[i] = zi < 0 ? NOISE : zi;
    ids[i] = c.cluster_id;
    sizes[i] = Math.min(12, 3 + Math.round(Math.sqrt(c.size) / 2));
    xy[2 * i] = c.centroid_2d?.[0] ?? NaN;
    xy[2 * i + 1] = c.centroid_2d?.[1] ?? NaN;
  });
  return { fps, zones, kind: KIND.centroid, owner: { label: "discovery clusters" }, clusters: ids, sizes, fixedXY: xy };
}

/**
 * The discovery run's training points (GET /discovery/points, columnar) as one group: each at
 * its map position, coloured by zone in the faded palette (noise faded grey) so the points of
 * this session and saved sessions stand out on top of them. They have no fingerprint here.
 */
export function discoveryGroup(p: DiscoveryPoints): Group | null {
  const n = p.x.length;
  for (const k of ["y", "label", "zone", "request_id", "session_id", "step"] as const) {
    const col = p[k];
    if (col !== undefined && col.length !== n) throw new Error(`/discovery/points: ${k} has ${col.length} values, x has ${n}`);
  }
  if (!n) return null;
  const zones = new Uint8Array(n);
  const colors = new Uint8Array(n);
  const clusters = new Int32Array(n);
  const xy = new Float32Array(2 * n);
  const steps = p.step ? new Int32Array(n) : undefined;
  for (let i = 0; i < n; i++) {
    const zi = ZONES.indexOf(p.zone[i] as (typeof ZONES)[number]);
    zones[i] = zi < 0 ? NOISE : zi;
    clusters[i] = p.label[i];
    colors[i] = FADED + (p.label[i] < 0 ? NOISE : zones[i]);
    xy[2 * i] = p.x[i];
    xy[2 * i + 1] = p.y[i];
    if (steps) steps[i] = p.step![i] ?? -1;
  }
  return {
    fps: new Float32Array(0),
    zones,
    kind: KIND.discovery,
    owner: {
      label: `discovery run ${p.run_id ?? "?"}`,
      discovery: { runId: p.run_id, zone: p.zone, requestId: p.request_id, sessionId: p.session_id },
    },
    steps,
    clusters,
    colors,
    fixedXY: xy,
  };
}

/** Deterministic synthetic fingerprints around the zone test patterns (measurements only). */
export function syntheticGroup(n: number, seed = 1): Group {
  let s = seed >>> 0;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296);
  const fps = new Float32Array(n * FINGERPRINT_DIM);
  const zones = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    // a histogram peaked at one of a few distance bins, plus noise
    const peak = [0, 2, 4, 6, 9][Math.floor(rnd() * 5)];
    const h = new Array(16).fill(0).map((_, b) => Math.exp(-Math.abs(b - peak) * (0.8 + rnd())) + 0.05 * rnd());
    const sum = h.reduce((a, b) => a + b, 0);
    const hist = h.map((v) => v / sum);
    const fp = [hist.slice(0, 3).reduce((a, b) => a + b, 0), hist.slice(3, 8).reduce((a, b) => a + b, 0), hist.slice(8).reduce((a, b) => a + b, 0), 0.2 + 0.7 * rnd(), ...hist];
    fps.set(fp, i * FINGERPRINT_DIM);
    zones[i] = ZONES.indexOf(digestOf([fp]).dominantZone ?? "diffuse");
  }
  return { fps, zones, kind: KIND.synthetic, owner: { label: `synthetic (${n} points, measurement)` } };
}

/** Concatenate groups and place them on the map. */
export async function buildSet(groups: Group[], pca: PcaModel, sidecar: SidecarClient | null, signal?: AbortSignal): Promise<ManifoldSet> {
  const n = groups.reduce((a, g) => a + g.zones.length, 0);
  const fps = new Float32Array(n * FINGERPRINT_DIM);
  const kind = new Uint8Array(n);
  const ownerIdx = new Int32Array(n);
  const step = new Int32Array(n).fill(-1);
  const cluster = new Int32Array(n).fill(-1);
  const zone = new Uint8Array(n);
  const color = new Uint8Array(n);
  const size = new Uint8Array(n);
  const fixed = new Float32Array(n * 2).fill(NaN);
  const version = new Uint8Array(n).fill(1);
  const sinkMass = new Float32Array(n).fill(NaN);
  const owners: Owner[] = [];
  const starts = new Int32Array(groups.length);
  let discoveryCount = 0;
  let o = 0;
  groups.forEach((g, gi) => {
    owners.push(g.owner);
    starts[gi] = o;
    const m = g.zones.length;
    if (g.kind === KIND.discovery) discoveryCount += m;
    // groups without fingerprints (discovery points) leave zeros
    fps.set(g.fps.subarray(0, m * FINGERPRINT_DIM), o * FINGERPRINT_DIM);
    for (let i = 0; i < m; i++) {
      kind[o + i] = g.kind;
      ownerIdx[o + i] = gi;
      zone[o + i] = g.zones[i];
      color[o + i] = g.colors ? g.colors[i] : g.zones[i];
      size[o + i] = g.sizes ? g.sizes[i] : SIZE[g.kind];
      if (g.steps) step[o + i] = g.steps[i];
      if (g.clusters) cluster[o + i] = g.clusters[i];
      if (g.versions?.[i] === 2) version[o + i] = 2;
      if (g.sinkMasses) sinkMass[o + i] = g.sinkMasses[i];
      if (g.fixedXY) {
        fixed[2 * (o + i)] = g.fixedXY[2 * i];
        fixed[2 * (o + i) + 1] = g.fixedXY[2 * i + 1];
      }
    }
    o += m;
  });
  let x: Float32Array;
  let y: Float32Array;
  let projection: ManifoldSet["projection"] = "pca";
  if (sidecar && n) {
    // The sidecar's map: every fingerprint classified against the discovery run, except the
    // points that already have their place on it (centroids, discovery points).
    const vectors: number[][] = [];
    const idx: number[] = [];
    for (let i = 0; i < n; i++) {
      if (Number.isFinite(fixed[2 * i])) continue;
      vectors.push(Array.from(fps.subarray(i * FINGERPRINT_DIM, (i + 1) * FINGERPRINT_DIM)));
      idx.push(i);
    }
    const res = await sidecar.classify(vectors, signal);
    x = new Float32Array(n);
    y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      x[i] = fixed[2 * i];
      y[i] = fixed[2 * i + 1];
    }
    res.forEach((r, k) => {
      const i = idx[k];
      x[i] = r.x;
      y[i] = r.y;
      cluster[i] = r.cluster_id;
      const zi = ZONES.indexOf(r.zone as (typeof ZONES)[number]);
      if (zi >= 0) color[i] = zi;
      if (r.cluster_id < 0) color[i] = NOISE;
    });
    projection = "sidecar";
  } else {
    ({ x, y } = projectFlat(fps, n, pca));
  }
  return { data: { n, x, y, color, size }, fps, kind, ownerIdx, owners, step, cluster, zone, starts, discoveryCount, projection, version, sinkMass };
}
