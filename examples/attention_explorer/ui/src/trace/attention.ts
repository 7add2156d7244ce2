// Attention math on captured entries: true probabilities, sink handling, renormalization,
// and a per-step fingerprint estimate. Pure functions, so every view computes the same thing.
import type { RawEntry, SketchEntry } from "../api/wire";
import { binOfDistance, fingerprintFromHist, N_HIST_BINS } from "../zones/zones";

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
  entropy: number | null;
  massCaptured: number | null;
  hist: number[];
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
 */
export function signalFromRaw(entries: RawEntry[], exclude?: ReadonlySet<number>): StepSignal | null {
  if (!entries.length) return null;
  const hist = new Array(N_HIST_BINS).fill(0);
  let mass = 0;
  let entNorm = 0;
  for (const e0 of entries) {
    const e = exclude?.size ? dropPositions(e0, exclude) : e0;
    const tp = trueProbs(e);
    const m = tp.reduce((s, x) => s + x, 0);
    mass += m;
    let h = 0;
    e.token_positions.forEach((p, i) => {
      const q = tp[i] / (m || 1);
      hist[binOfDistance(Math.max(0, e.query_position - p))] += q / entries.length;
      if (q > 0) h -= q * Math.log(q);
    });
    const w = e.query_position + 1;
    entNorm += w > 1 ? h / Math.log(w) : 0;
  }
  return {
    fingerprint: fingerprintFromHist(hist, Math.min(1, entNorm / entries.length)),
    source: "topk",
    entropy: null,
    massCaptured: mass / entries.length,
    hist,
  };
}

function dropPositions(e: RawEntry, drop: ReadonlySet<number>): RawEntry {
  const keep = e.token_positions.map((_, i) => i).filter((i) => !drop.has(e.token_positions[i]));
  return { ...e, token_positions: keep.map((i) => e.token_positions[i]), attention_scores: keep.map((i) => e.attention_scores[i]), topk_logits: keep.map((i) => e.topk_logits[i]) };
}

/** Fingerprint from a sketch entry, averaged over its layers as the server does. */
export function signalFromSketch(e: SketchEntry): StepSignal | null {
  const layers = Object.values(e.layer_sketches);
  if (!layers.length) return null;
  const hist = new Array(N_HIST_BINS).fill(0);
  let ent = 0;
  let mass = 0;
  for (const s of layers) {
    s.dist_hist.forEach((v, i) => (hist[i] += v / layers.length));
    ent += s.entropy / layers.length;
    mass += s.mass_captured / layers.length;
  }
  const w = e.query_position + 1;
  const entNorm = w > 1 ? Math.min(1, ent / Math.log(w)) : 0;
  return { fingerprint: fingerprintFromHist(hist, entNorm), source: "sketch", entropy: ent, massCaptured: mass, hist };
}
