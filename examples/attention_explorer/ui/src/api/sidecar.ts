// HTTP client of `python -m sglang.srt.attention_sidecar` (docs/sidecar.md): discovery status,
// /classify (cluster, zone, 2-D map coordinates of fingerprints), /centroids, /discovery/points
// (the discovery run's training points), /pca/interpretation.
// The sidecar allows the dashboard's origin through CORS (--cors-origins, default "*").
import { errorMessage, trimUrl } from "./client";

export interface ClassifyResult {
  cluster_id: number;
  zone: string;
  confidence: number;
  zone_confidence: number;
  traits: string[];
  sampling_hints: { temperature: number; top_p: number; capture_mode: "raw" | "sketch" | "fingerprint" };
  x: number;
  y: number;
  distance: number | null;
  basis: string;
  vector_zone: string;
  out_of_distribution: boolean;
  method: string;
  run_id: number;
}

export interface SidecarCluster {
  cluster_id: number;
  size: number;
  centroid: number[];
  centroid_2d?: [number, number];
  radius: number;
  zone: string;
  zone_confidence: number;
  traits: string[];
  sampling_hints: ClassifyResult["sampling_hints"];
}

export interface DiscoveryStatus {
  loaded: boolean;
  current: { run_id: number; n_points: number; n_clusters: number; created_at: number } | null;
  last_error: string | null;
}

/** GET /discovery/points: the discovery run's training points, one list per field (same order). */
export interface DiscoveryPoints {
  run_id: number | null;
  format: string;
  manifest_sha256: string | null;
  /** Training points in the run; the lists hold `count` of them from `offset`. */
  total: number;
  offset: number;
  limit: number;
  count: number;
  x: number[];
  y: number[];
  /** HDBSCAN cluster, -1 = noise. */
  label: number[];
  /** The cluster's zone; for noise the point's own zone, or "unknown". */
  zone: string[];
  request_id?: (string | null)[];
  session_id?: (string | null)[];
  step?: (number | null)[];
}

/** Points the Manifold asks for (the sidecar's default page size). */
export const DISCOVERY_POINTS_LIMIT = 100_000;

/** The most vectors sent in one /classify call (the sidecar accepts 10,000). */
export const CLASSIFY_BATCH = 5000;

async function getJson<T>(url: string, init?: RequestInit, signal?: AbortSignal): Promise<T> {
  const res = await fetch(url, { ...init, signal });
  if (!res.ok) throw new Error(await errorMessage(res));
  return (await res.json()) as T;
}

export class SidecarClient {
  readonly base: string;
  constructor(base: string) {
    this.base = trimUrl(base);
  }

  status(signal?: AbortSignal): Promise<DiscoveryStatus> {
    return getJson(`${this.base}/discovery/status`, undefined, signal);
  }

  async centroids(signal?: AbortSignal): Promise<{ run_id: number | null; clusters: SidecarCluster[] }> {
    return getJson(`${this.base}/centroids`, undefined, signal);
  }

  /** The discovery run's training points (map coordinates, cluster, zone, ids), one page. */
  discoveryPoints(limit = DISCOVERY_POINTS_LIMIT, offset = 0, signal?: AbortSignal): Promise<DiscoveryPoints> {
    return getJson(`${this.base}/discovery/points?limit=${limit}&offset=${offset}`, undefined, signal);
  }

  pcaInterpretation(signal?: AbortSignal): Promise<unknown> {
    return getJson(`${this.base}/pca/interpretation`, undefined, signal);
  }

  /** Classify fingerprints (batched); answers are in input order. */
  async classify(vectors: number[][], signal?: AbortSignal): Promise<ClassifyResult[]> {
    const out: ClassifyResult[] = [];
    for (let i = 0; i < vectors.length; i += CLASSIFY_BATCH) {
      const chunk = vectors.slice(i, i + CLASSIFY_BATCH);
      const r = await getJson<{ results: ClassifyResult[] }>(
        `${this.base}/classify`,
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ vectors: chunk }) },
        signal,
      );
      out.push(...r.results);
    }
    return out;
  }
}
