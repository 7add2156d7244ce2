// Compare two digests: one similarity score with its formula, the differences that matter in
// plain sentences, and the PCA reading of the difference. test/analysis.test.ts checks the
// numbers against numpy (test/fixtures/make_analysis_expectations.py).
import { type Zone, ZONES } from "../zones/zones";
import { type Digest, digestVersion } from "./digest";
import { type PcaModel, type PcReading, readComponents, shippedPca } from "./pca";

export const WEIGHTS = { cosine: 0.5, zoneAgreement: 0.3, entropy: 0.2 } as const;
export const MASS_THRESHOLD = 0.05;
export const RIPPLE_THRESHOLD = 0.1;
export const FORMULA = "score = 0.5 × cos(mean fp A, mean fp B) + 0.3 × Σ_zone min(share A, share B) + 0.2 × (1 − |entropy A − entropy B|)";

export interface Similarity {
  cosine: number;
  zoneAgreement: number;
  entropyDiff: number;
  score: number;
}

export function cosine(a: number[], b: number[]): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

export function similarity(a: Digest, b: Digest): Similarity {
  const cos = cosine(a.mean, b.mean);
  let agree = 0;
  for (const z of ZONES) agree += Math.min(a.zoneShare[z] ?? 0, b.zoneShare[z] ?? 0);
  const entropyDiff = Math.abs(a.entropy - b.entropy);
  return {
    cosine: cos,
    zoneAgreement: agree,
    entropyDiff,
    score: WEIGHTS.cosine * cos + WEIGHTS.zoneAgreement * agree + WEIGHTS.entropy * (1 - entropyDiff),
  };
}

export type DiffKey = "local_mass" | "mid_mass" | "long_mass" | "entropy" | "periodicity";

export interface DiffItem {
  key: DiffKey;
  a: number;
  b: number;
  delta: number;
}

/** Metrics that differ enough to mention, largest first (B relative to A). */
export function differenceItems(a: Digest, b: Digest): DiffItem[] {
  const items: DiffItem[] = [];
  (["local_mass", "mid_mass", "long_mass", "entropy"] as const).forEach((key, idx) => {
    const va = a.mean[idx];
    const vb = b.mean[idx];
    if (Math.abs(vb - va) >= MASS_THRESHOLD) items.push({ key, a: va, b: vb, delta: vb - va });
  });
  if (Math.abs(b.ripple - a.ripple) >= RIPPLE_THRESHOLD) items.push({ key: "periodicity", a: a.ripple, b: b.ripple, delta: b.ripple - a.ripple });
  return items.sort((x, y) => Math.abs(y.delta) - Math.abs(x.delta));
}

const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
const REACH: Record<"local_mass" | "mid_mass" | "long_mass", string> = {
  local_mass: "the last few tokens (distance < 8)",
  mid_mass: "the same sentence or paragraph (distance 8-255)",
  long_mass: "distant context (distance 256 or more)",
};

function sentence(it: DiffItem, na: string, nb: string): string {
  const more = it.delta > 0;
  if (it.key === "entropy") {
    return `${nb} spreads its attention ${more ? "more widely" : "more narrowly"} than ${na}: normalized entropy ${it.b.toFixed(2)} vs ${it.a.toFixed(2)}.`;
  }
  if (it.key === "periodicity") {
    return `${nb} shows ${more ? "more" : "less"} periodic structure (lists, code, repeated formats) than ${na}: ripple ${it.b.toFixed(2)} vs ${it.a.toFixed(2)}.`;
  }
  const pts = Math.abs(it.delta * 100).toFixed(0);
  return `${nb} puts ${more ? "more" : "less"} attention on ${REACH[it.key]}: ${pct(it.b)} vs ${pct(it.a)} (${more ? "+" : "−"}${pts} points).`;
}

/** The key differences as plain sentences, B described relative to A. */
export function differenceSentences(a: Digest, b: Digest, names: [string, string] = ["A", "B"]): string[] {
  const [na, nb] = names;
  const out: string[] = [];
  if (a.dominantZone && b.dominantZone && a.dominantZone !== b.dominantZone) {
    out.push(`The dominant zone changes from ${a.dominantZone} (${na}, ${pct(a.zoneShare[a.dominantZone])} of steps) to ${b.dominantZone} (${nb}, ${pct(b.zoneShare[b.dominantZone])}).`);
  } else if (a.dominantZone && a.dominantZone === b.dominantZone) {
    const z: Zone = a.dominantZone;
    out.push(`Both are mostly ${z}: ${pct(a.zoneShare[z])} of ${na}'s steps and ${pct(b.zoneShare[z])} of ${nb}'s.`);
  }
  const items = differenceItems(a, b);
  for (const it of items) out.push(sentence(it, na, nb));
  if (!items.length) out.push(`No attention metric differs by ${MASS_THRESHOLD * 100} points or more: the two attend almost identically.`);
  return out;
}

/** The fingerprint version two digests share: 2 when both are sink-aware (v2), else 1. */
export function pairVersion(a: Digest, b: Digest): 1 | 2 {
  return digestVersion(a) === 2 && digestVersion(b) === 2 ? 2 : 1;
}

/**
 * PC1..PC4 reading of mean(B) - mean(A): which named directions the difference points along.
 * Without a model (no sidecar interpretation), the shipped PCA of the pair's version.
 */
export function pcaDifference(a: Digest, b: Digest, model: PcaModel = shippedPca(pairVersion(a, b))): PcReading[] {
  return readComponents(
    b.mean.map((x, i) => x - a.mean[i]),
    model,
    false,
  );
}
