// TypeScript copy of sgl-kernel/python/sgl_kernel/zones.py (the one zone classifier).
// It must classify exactly as the Python module does: test/zones.test.ts runs both over
// sgl_kernel/data/zone_test_vectors.json. Change the two together.

export const FINGERPRINT_DIM = 20;
export const N_HIST_BINS = 16;

export const ZONES = ["syntax_floor", "semantic_bridge", "long_range", "structure_ripple", "diffuse"] as const;
export type Zone = (typeof ZONES)[number];

export const THRESHOLDS: Record<Zone, number> = {
  syntax_floor: 0.6,
  semantic_bridge: 0.4,
  long_range: 0.3,
  structure_ripple: 0.35,
  diffuse: 0.7,
};
export const FOCUSED_ENTROPY = 0.35;

/** Fingerprint versions: 1 = over every unmasked key (the spec's); 2 = sink-aware (the engine's default). */
export type FingerprintVersion = 1 | 2;
/** Version-2 thresholds, re-derived from the default model's fingerprints (zones.py THRESHOLDS_V2). */
export const THRESHOLDS_V2: Record<Zone, number> = {
  syntax_floor: 0.67,
  semantic_bridge: 0.52,
  long_range: 0.2,
  structure_ripple: 0.35,
  diffuse: 0.63,
};
export const FOCUSED_ENTROPY_V2 = 0.43;

/** (zone thresholds, focused-entropy threshold) of a fingerprint version (1 for data that does not say). */
export function thresholdsFor(version: number = 1): { thresholds: Record<Zone, number>; focused: number } {
  if (version === 1) return { thresholds: THRESHOLDS, focused: FOCUSED_ENTROPY };
  if (version === 2) return { thresholds: THRESHOLDS_V2, focused: FOCUSED_ENTROPY_V2 };
  throw new Error(`fingerprint version must be 1 or 2, got ${version}`);
}

export const SAMPLING_HINTS: Record<Zone, { temperature: number; top_p: number }> = {
  syntax_floor: { temperature: 0.3, top_p: 0.9 },
  semantic_bridge: { temperature: 0.7, top_p: 0.95 },
  long_range: { temperature: 0.5, top_p: 0.9 },
  structure_ripple: { temperature: 0.2, top_p: 0.85 },
  diffuse: { temperature: 0.9, top_p: 0.98 },
};

/** Capture mode suggested per zone (CAPTURE_MODE_HINTS in zones.py). */
export const CAPTURE_MODE_HINTS: Record<Zone, "raw" | "sketch" | "fingerprint"> = {
  syntax_floor: "fingerprint",
  semantic_bridge: "sketch",
  long_range: "raw",
  structure_ripple: "sketch",
  diffuse: "fingerprint",
};

export const ZONE_DESCRIPTIONS: Record<Zone, string> = {
  syntax_floor: "Local syntax: attention stays on the last few tokens",
  semantic_bridge: "Semantic bridge: attention reaches back a sentence or paragraph",
  long_range: "Long range: attention retrieves from far back in the context",
  structure_ripple: "Structure ripple: attention returns in several separated distance bands (lists, code)",
  diffuse: "Diffuse: attention spread thinly over many tokens",
};

/** Histogram bin of a query-key distance d >= 0 (bin 0 = {0,1}, bin b = [2^b, 2^(b+1)), bin 15 = d >= 32768). */
export function binOfDistance(d: number): number {
  if (d <= 1) return 0;
  return Math.min(Math.floor(Math.log2(d)), N_HIST_BINS - 1);
}

/** 20-float fingerprint from a 16-bin histogram and a normalized entropy. */
export function fingerprintFromHist(hist: number[], entropyNorm: number): number[] {
  const sum = (a: number, b: number) => hist.slice(a, b).reduce((s, x) => s + x, 0);
  return [sum(0, 3), sum(3, 8), sum(8, 16), entropyNorm, ...hist];
}

export function validateFingerprint(fp: unknown): number[] {
  if (!Array.isArray(fp) || fp.some((x) => typeof x !== "number")) {
    throw new Error(`fingerprint must be a list of ${FINGERPRINT_DIM} numbers`);
  }
  if (fp.length !== FINGERPRINT_DIM) throw new Error(`fingerprint must have ${FINGERPRINT_DIM} values, got ${fp.length}`);
  if (fp.some((x) => !Number.isFinite(x))) throw new Error("fingerprint contains NaN or infinity");
  return fp as number[];
}

/** Mass of histogram peaks separated from the global peak by a strictly lower bin. */
export function ripple(hist: number[]): number {
  const total = hist.reduce((s, x) => s + x, 0);
  if (total <= 0) return 0;
  let g = 0;
  for (let i = 1; i < hist.length; i++) if (hist[i] > hist[g]) g = i; // first max, like numpy.argmax
  let mass = 0;
  for (let i = 0; i < hist.length; i++) {
    if (i === g || hist[i] <= 0) continue;
    const left = i > 0 ? hist[i - 1] : -1;
    const right = i + 1 < hist.length ? hist[i + 1] : -1;
    if (hist[i] < left || hist[i] < right) continue;
    const lo = Math.min(i, g);
    const hi = Math.max(i, g);
    const between = hist.slice(lo + 1, hi);
    if (between.length && Math.min(...between) < hist[i]) mass += hist[i];
  }
  return mass / total;
}

export function signals(fp: number[]): Record<Zone, number> {
  const v = validateFingerprint(fp);
  return {
    syntax_floor: v[0],
    semantic_bridge: v[1],
    long_range: v[2],
    structure_ripple: ripple(v.slice(4)),
    diffuse: v[3],
  };
}

/**
 * Python's round(x, n). toFixed rounds the exact binary value to the nearest decimal, as
 * Python does; exact ties cannot occur at n >= 1 decimals for binary doubles (10^n has a
 * factor 5^n), so the two agree.
 */
export function roundTo(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

export interface ZoneResult {
  zone: Zone;
  confidence: number;
  scores: Record<Zone, number>;
}

export function classify(fp: number[], version: number = 1): ZoneResult {
  const th = thresholdsFor(version).thresholds;
  const sig = signals(fp);
  const scores = {} as Record<Zone, number>;
  for (const z of ZONES) scores[z] = sig[z] / th[z];
  const rounded = {} as Record<Zone, number>;
  for (const z of ZONES) rounded[z] = roundTo(scores[z], 6);
  const t = th.diffuse;
  if (sig.diffuse >= t) {
    const conf = 0.5 + 0.5 * Math.min(1, (sig.diffuse - t) / (1 - t));
    return { zone: "diffuse", confidence: roundTo(conf, 6), scores: rounded };
  }
  const order = ZONES.slice(0, 4).sort((a, b) => scores[b] - scores[a] || ZONES.indexOf(a) - ZONES.indexOf(b));
  const best = scores[order[0]];
  const second = scores[order[1]];
  const conf = best <= 0 ? 0 : (Math.min(1, best) * (best - second)) / best;
  return { zone: order[0], confidence: roundTo(conf, 6), scores: rounded };
}

export function traits(fp: number[], version: number = 1): string[] {
  const { thresholds: th, focused } = thresholdsFor(version);
  const sig = signals(fp);
  const out: string[] = [];
  if (sig.syntax_floor >= th.syntax_floor) out.push("syntax_floor", "local_attention");
  if (sig.semantic_bridge >= th.semantic_bridge) out.push("semantic_bridge", "retrieval_heavy");
  if (sig.long_range >= th.long_range) out.push("long_range", "context_aware");
  if (sig.diffuse >= th.diffuse) out.push("diffuse");
  else if (sig.diffuse <= focused) out.push("focused");
  if (sig.structure_ripple >= th.structure_ripple) out.push("periodic");
  return out;
}

export interface SamplingHint {
  temperature: number;
  top_p: number;
  capture_mode: "raw" | "sketch" | "fingerprint";
  zone: Zone;
}

/** zones.py sampling_hints for a zone (what the sidecars document and the Router recommends). */
export function hintsForZone(zone: Zone): SamplingHint {
  return { ...SAMPLING_HINTS[zone], capture_mode: CAPTURE_MODE_HINTS[zone], zone };
}

export function samplingHints(fp: number[], version: number = 1): SamplingHint {
  return hintsForZone(classify(fp, version).zone);
}
