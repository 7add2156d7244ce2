// The shipped PCA interpretation (src/data/: copies of python/sglang/srt/attention_sidecar/data/
// pca_interpretation{,_v2}.json, which the sidecar also serves at GET /pca/interpretation; a test
// keeps them equal, so this folder builds on its own): project fingerprints onto PC1..PC4 and
// explain a difference between two runs. Same math as pca_interpretation.explain in Python.
import shipped from "../data/pca_interpretation.json";
import shippedV2 from "../data/pca_interpretation_v2.json";
import { FINGERPRINT_DIM } from "../zones/zones";

export interface PcaComponent {
  pc: number;
  name: string;
  explained_variance: number;
  explained_variance_ratio: number;
  loadings: number[];
  positive: string;
  negative: string;
}

export interface PcaModel {
  mean: number[];
  components: PcaComponent[];
  strength_thresholds: { strong: number; moderate: number };
  source?: unknown;
}

export const STRONG = 1.5;
export const MODERATE = 0.5;

/** Validate a PCA interpretation document (shipped file or the sidecar's answer). */
export function parsePcaModel(doc: unknown): PcaModel {
  const d = doc as Partial<PcaModel> | null;
  if (!d || typeof d !== "object") throw new Error("PCA interpretation must be a JSON object");
  if (!Array.isArray(d.mean) || d.mean.length !== FINGERPRINT_DIM) throw new Error(`PCA interpretation: mean must have ${FINGERPRINT_DIM} values`);
  if (!Array.isArray(d.components) || d.components.length < 2) throw new Error("PCA interpretation: needs at least 2 components");
  d.components.forEach((c, i) => {
    if (!Array.isArray(c.loadings) || c.loadings.length !== FINGERPRINT_DIM) throw new Error(`PCA interpretation: components[${i}].loadings must have ${FINGERPRINT_DIM} values`);
    if (!(typeof c.explained_variance === "number" && c.explained_variance >= 0)) throw new Error(`PCA interpretation: components[${i}].explained_variance must be a number >= 0`);
  });
  return {
    mean: d.mean,
    components: d.components,
    strength_thresholds: d.strength_thresholds ?? { strong: STRONG, moderate: MODERATE },
    source: d.source,
  };
}

/** Version-1 defaults (the dashboard's own fingerprint estimates keep the sink in, like version 1). */
export const SHIPPED_PCA: PcaModel = parsePcaModel(shipped);
/** Version-2 (sink-aware) defaults, fitted on the engine's version-2 fingerprints of the default model. */
export const SHIPPED_PCA_V2: PcaModel = parsePcaModel(shippedV2);

/** The shipped defaults for fingerprints of a version (1 for data that does not say). */
export function shippedPca(version: number = 1): PcaModel {
  return version === 2 ? SHIPPED_PCA_V2 : SHIPPED_PCA;
}

export interface PcReading {
  pc: number;
  name: string;
  score: number;
  z: number;
  strength: "Strong" | "Moderate" | "Weak";
  phrase: string;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>, off = 0): number {
  let s = 0;
  for (let j = 0; j < FINGERPRINT_DIM; j++) s += a[off + j] * b[j];
  return s;
}

/** Score and z-score on each component. centre=false for a difference of two fingerprints. */
export function readComponents(x: number[], model: PcaModel = SHIPPED_PCA, centre = true): PcReading[] {
  const v = centre ? x.map((xi, j) => xi - model.mean[j]) : x;
  const { strong, moderate } = model.strength_thresholds;
  return model.components.map((c) => {
    const score = dot(v, c.loadings);
    const z = score / (Math.sqrt(c.explained_variance) || 1);
    const a = Math.abs(z);
    return {
      pc: c.pc,
      name: c.name,
      score,
      z,
      strength: a >= strong ? "Strong" : a >= moderate ? "Moderate" : "Weak",
      phrase: z >= 0 ? c.positive : c.negative,
    };
  });
}

/**
 * Project n fingerprints stored row-major in `flat` (n x 20) onto PC1/PC2: the browser's 2-D
 * map when no sidecar runs. Typed arrays: the Manifold draws 100k points from these.
 */
export function projectFlat(flat: Float64Array | Float32Array | number[], n: number, model: PcaModel = SHIPPED_PCA): { x: Float32Array; y: Float32Array } {
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  const l1 = model.components[0].loadings;
  const l2 = model.components[1].loadings;
  // (f - mean) . l = f . l - mean . l
  const c1 = dot(model.mean, l1);
  const c2 = dot(model.mean, l2);
  for (let i = 0; i < n; i++) {
    x[i] = dot(flat, l1, i * FINGERPRINT_DIM) - c1;
    y[i] = dot(flat, l2, i * FINGERPRINT_DIM) - c2;
  }
  return { x, y };
}

export function project2d(fp: number[], model: PcaModel = SHIPPED_PCA): [number, number] {
  const r = projectFlat(fp, 1, model);
  return [r.x[0], r.y[0]];
}
