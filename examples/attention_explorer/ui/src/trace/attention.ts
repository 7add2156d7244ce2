// Attention math on captured entries: true probabilities, sink handling, renormalization,
// and a per-step fingerprint estimate. Pure functions, so every view computes the same thing.
import type { RawEntry, SketchEntry } from "../api/wire";
import { binOfDistance, fingerprintFromHist, type FingerprintVersion, N_HIST_BINS } from "../zones/zones";

export interface Link {
  position: number;
  /** exp(topk_logit - logsumexp_candidates): the head-averaged attention probability. */
  trueProb: number;
  /** The server's score, renormalized over the top-k (sums to 1). */
  score: number;
  /** The score renormalized again after excluded (sink) positions are dropped. */
  shown: number;
  isSink: boolean;
}

export function trueProbs(e: RawEntry): number[] {
  return e.topk_logits.map((l) => Math.exp(l - e.logsumexp_candidates));
}

/**
 * Links of one raw entry. When `excludeSinks` is set, sink positions are dropped and the
 * remaining scores renormalized to sum to 1 (true probabilities are left as they are:
 * they are absolute and do not depend on what we hide).
 */
export function linksOf(e: RawEntry, sinks: ReadonlySet<number>, excludeSinks: boolean): Link[] {
  const tp = trueProbs(e);
  const all = e.token_positions.map((p, i) => ({
    position: p,
    trueProb: tp[i],
    score: e.attention_scores[i],
    shown: e.attention_scores[i],
    isSink: sinks.has(p),
  }));
  if (!excludeSinks) return all;
  const kept = all.filter((l) => !l.isSink);
  const total = kept.reduce((s, l) => s + l.score, 0);
  return kept.map((l) => ({ ...l, shown: total > 0 ? l.score / total : 0 }));
}

/** Sum of true probabilities over the top-k (the captured share of attention). */
export function massCaptured(e: RawEntry): number {
  return trueProbs(e).reduce((s, x) => s + x, 0);
}

export interface StepSignal {
  fingerprint: number[];
  /** "server": sent by the server (fingerprint mode); "sketch": exact from per-layer sketches;
   * "topk": estimated from the top-k only (raw mode), so mass outside the top-k is missing. */
  source: "server" | "sketch" | "topk";
  /** Which definition the fingerprint follows: 1 = every unmasked key, the sink included;
   * 2 = sink-aware (the histogram and local/mid/long over the non-sink keys, renormalized).
   * Classify it with the same version's thresholds: classify(fingerprint, version). */
  version: FingerprintVersion;
  entropy: number | null;
  massCaptured: number | null;
  hist: number[];
}

/**
 * Sink positions of a version-2 entry as the dashboard reads them: the first one (position 0).
 * Entries do not carry the request's `attention_sink_tokens`, so the documented default (1) is
 * assumed; a request sent with another sink count is read as if it had one sink position.
 */
export const ASSUMED_SINK_TOKENS = 1;
/** Below this non-sink mass a version-2 histogram is all zero (as the server does). */
export const REST_EPS = 1e-4;

/** Version of a step's raw entries: 2 when every entry says fingerprint_version 2, else 1. */
export function rawVersion(entries: RawEntry[]): FingerprintVersion {
  return entries.length > 0 && entries.every((e) => e.fingerprint_version === 2) ? 2 : 1;
}

/** Version of a sketch entry's reading: 2 when it says fingerprint_version 2 and every layer carries
 * sink_mass (needed to take the sink out of its histogram), else 1. */
export function sketchVersion(e: SketchEntry): FingerprintVersion {
  const layers = Object.values(e.layer_sketches);
  return e.fingerprint_version === 2 && layers.length > 0 && layers.every((l) => typeof l.sink_mass === "number") ? 2 : 1;
}

/** A wire fingerprint_version as 1 or 2 (absent, on older traces, or unknown: 1). */
export function versionOf(v: number | undefined): FingerprintVersion {
  return v === 2 ? 2 : 1;
}

/** How a reading of a version was measured, in words (the views' "measured" notes). */
export function versionNote(version: FingerprintVersion): string {
  return version === 2
    ? "fingerprint v2, sink-aware: position 0 left out, the rest renormalized to sum 1; the sink's share is the separate sink mass"
    : "fingerprint v1: over every key, the sink (position 0) counted in local/mid/long like any key";
}

/** Mean server sink_mass over a step's entries (raw, sketch layers or fingerprint), or null when none carries it. */
export function sinkMassOf(sc: { raw: RawEntry[]; sketch?: SketchEntry; fingerprint?: { sink_mass?: number } } | undefined): { mass: number } | null {
  if (!sc) return null;
  const vals: number[] = [];
  for (const e of sc.raw) if (typeof e.sink_mass === "number") vals.push(e.sink_mass);
  if (!vals.length && sc.sketch) for (const l of Object.values(sc.sketch.layer_sketches)) if (typeof l.sink_mass === "number") vals.push(l.sink_mass);
  if (!vals.length && typeof sc.fingerprint?.sink_mass === "number") vals.push(sc.fingerprint.sink_mass);
  if (!vals.length) return null;
  return { mass: vals.reduce((a, b) => a + b, 0) / vals.length };
}

/**
 * Fingerprint from raw entries (one per layer): histogram of true top-k mass by distance.
 * With `exclude`, those positions (the sinks) are left out and the rest renormalized.
 * Version 2 (the entries' fingerprint_version, unless given): position 0 (the sink, see
 * ASSUMED_SINK_TOKENS) is left out too, the rest renormalized (all zero below REST_EPS), and the
 * entropy is normalized by ln(number of non-sink keys), as the server's version 2 does.
 */
export function signalFromRaw(entries: RawEntry[], exclude?: ReadonlySet<number>, version: FingerprintVersion = rawVersion(entries)): StepSignal | null {
  if (!entries.length) return null;
  let drop = exclude;
  if (version === 2) {
    const d = new Set<number>(exclude ?? []);
    for (let p = 0; p < ASSUMED_SINK_TOKENS; p++) d.add(p);
    drop = d;
  }
  const hist = new Array(N_HIST_BINS).fill(0);
  let mass = 0;
  let entNorm = 0;
  for (const e0 of entries) {
    const e = drop?.size ? dropPositions(e0, drop) : e0;
    const tp = trueProbs(e);
    const m = tp.reduce((s, x) => s + x, 0);
    mass += m;
    if (version === 2 && m < REST_EPS) continue; // nothing outside the sink: an all-zero histogram
    let h = 0;
    e.token_positions.forEach((p, i) => {
      const q = tp[i] / (m || 1);
      hist[binOfDistance(Math.max(0, e.query_position - p))] += q / entries.length;
      if (q > 0) h -= q * Math.log(q);
    });
    const w = e.query_position + 1 - (version === 2 ? Math.min(ASSUMED_SINK_TOKENS, e.query_position + 1) : 0);
    entNorm += w > 1 ? h / Math.log(w) : 0;
  }
  return {
    fingerprint: fingerprintFromHist(hist, Math.min(1, entNorm / entries.length)),
    source: "topk",
    version,
    entropy: null,
    massCaptured: mass / entries.length,
    hist,
  };
}

function dropPositions(e: RawEntry, drop: ReadonlySet<number>): RawEntry {
  const keep = e.token_positions.map((_, i) => i).filter((i) => !drop.has(e.token_positions[i]));
  return { ...e, token_positions: keep.map((i) => e.token_positions[i]), attention_scores: keep.map((i) => e.attention_scores[i]), topk_logits: keep.map((i) => e.topk_logits[i]) };
}

/**
 * Fingerprint from a sketch entry, averaged over its layers as the server does.
 * Version 2 (a sketch with fingerprint_version 2 and sink_mass on every layer, unless given): in
 * each layer the sink's mass (sink_mass, on position 0: see ASSUMED_SINK_TOKENS) is taken out of
 * the bin of distance query_position, clamped at 0, and the rest renormalized to sum 1 (all zero
 * when it is below REST_EPS), then averaged over the layers: the server's version-2 histogram.
 * The entropy stays the sketch's (over every key, the sink included), normalized by ln(window).
 */
export function signalFromSketch(e: SketchEntry, version: FingerprintVersion = sketchVersion(e)): StepSignal | null {
  const layers = Object.values(e.layer_sketches);
  if (!layers.length) return null;
  const hist = new Array(N_HIST_BINS).fill(0);
  let ent = 0;
  let mass = 0;
  const sinkBin = binOfDistance(e.query_position);
  for (const s of layers) {
    let h = s.dist_hist;
    if (version === 2) {
      h = h.slice();
      h[sinkBin] = Math.max(0, h[sinkBin] - (s.sink_mass ?? 0));
      const rest = h.reduce((a, b) => a + b, 0);
      h = rest < REST_EPS ? h.map(() => 0) : h.map((v) => v / rest);
    }
    h.forEach((v, i) => (hist[i] += v / layers.length));
    ent += s.entropy / layers.length;
    mass += s.mass_captured / layers.length;
  }
  const w = e.query_position + 1;
  const entNorm = w > 1 ? Math.min(1, ent / Math.log(w)) : 0;
  return { fingerprint: fingerprintFromHist(hist, entNorm), source: "sketch", version, entropy: ent, massCaptured: mass, hist };
}
