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

/** Fingerprint from raw entries (one per layer): histogram of true top-k mass by distance. */
export function signalFromRaw(entries: RawEntry[]): StepSignal | null {
  if (!entries.length) return null;
  const hist = new Array(N_HIST_BINS).fill(0);
  let mass = 0;
  let entNorm = 0;
  for (const e of entries) {
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
