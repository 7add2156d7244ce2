// Fingerprint summary of a trace ("digest"): what the Manifold, Router and Compare views
// work from, and what a saved session stores next to its JSONL. The formulas match
// test/fixtures/make_analysis_expectations.py (numpy), which Vitest checks against.
import { sinkMassOf } from "../trace/attention";
import type { TraceSession } from "../trace/session";
import { classify, FINGERPRINT_DIM, type FingerprintVersion, ripple, type Zone, ZONES } from "../zones/zones";

export interface StepPoint {
  runId: string;
  step: number;
  fingerprint: number[];
  zone: Zone;
  /** The fingerprint's definition (StepSignal.version); the zone is read with its thresholds. */
  version: FingerprintVersion;
  /** The step's own server sink_mass (mean over its layers), or null when it has none. */
  sinkMass: number | null;
}

export interface Digest {
  /** Mean step fingerprint (20 floats). */
  mean: number[];
  /** Share of steps in each zone (sums to 1 when nSteps > 0). */
  zoneShare: Record<Zone, number>;
  /** Mean normalized entropy (fingerprint[3]). */
  entropy: number;
  /** Ripple (periodicity) of the mean distance histogram. */
  ripple: number;
  dominantZone: Zone | null;
  nSteps: number;
  tokenCount: number;
  runCount: number;
  /** Mean server sink_mass over the steps that carry it (attention on the first token(s), a quantity of
   * its own); null/absent when no step has it (fingerprint v1, older saves). */
  sinkMass?: number | null;
  /** Fingerprint version of the mean: 2 when every step is version 2 (sink-aware), else 1. Absent
   * on digests saved before versions were read: 1. */
  version?: FingerprintVersion;
  /** The steps mix versions 1 and 2 (the mean then mixes two definitions; read as version 1). */
  mixedVersions?: boolean;
}

/** A digest's version (1 for digests saved before it was recorded). */
export function digestVersion(d: Pick<Digest, "version">): FingerprintVersion {
  return d.version === 2 ? 2 : 1;
}

/** "v2 (sink-aware)", "v1", or "v1 (mixed v1/v2 steps)": how a digest's numbers were measured. */
export function digestVersionLabel(d: Pick<Digest, "version" | "mixedVersions">): string {
  if (d.mixedVersions) return "mixed v1/v2 steps (read as v1)";
  return digestVersion(d) === 2 ? "v2 (sink-aware)" : "v1";
}

/** Mean sink_mass over a run's (or every run's) steps that carry it, or null. */
export function meanSinkMass(session: TraceSession, runIds?: string[], steps?: { runId: string; step: number }[]): number | null {
  let sum = 0;
  let n = 0;
  const add = (v: { mass: number } | null) => {
    if (v) {
      sum += v.mass;
      n += 1;
    }
  };
  if (steps) for (const p of steps) add(sinkMassOf(session.runs.get(p.runId)?.steps.get(p.step)));
  else for (const run of session.runs.values()) if (!runIds || runIds.includes(run.id)) for (const sc of run.steps.values()) add(sinkMassOf(sc));
  return n ? sum / n : null;
}

/** The zone of a step: the server's (already in its version) or classify() with the step's version. */
export function zoneOf(fp: number[], version: FingerprintVersion = 1, serverZone?: string): Zone {
  if (serverZone && (ZONES as readonly string[]).includes(serverZone)) return serverZone as Zone;
  return classify(fp, version).zone;
}

/** One point per decode step that has a signal, over every run of the session. */
export function stepPoints(session: TraceSession, runIds?: string[]): StepPoint[] {
  const out: StepPoint[] = [];
  for (const run of session.runs.values()) {
    if (runIds && !runIds.includes(run.id)) continue;
    const steps = [...run.steps.keys()].sort((a, b) => a - b);
    for (const step of steps) {
      const sig = session.stepSignal(run, step);
      if (!sig || sig.fingerprint.length !== FINGERPRINT_DIM || sig.fingerprint.some((x) => !Number.isFinite(x))) continue;
      const sc = run.steps.get(step);
      out.push({
        runId: run.id,
        step,
        fingerprint: sig.fingerprint,
        zone: zoneOf(sig.fingerprint, sig.version, sc?.fingerprint?.manifold),
        version: sig.version,
        sinkMass: sinkMassOf(sc)?.mass ?? null,
      });
    }
  }
  return out;
}

/**
 * Digest of a list of step fingerprints (zones from classify, with each step's version, unless
 * given). `extra.versions`: the version of each fingerprint (absent: all version 1).
 */
export function digestOf(fps: number[][], zones?: Zone[], extra: { tokenCount?: number; runCount?: number; versions?: FingerprintVersion[] } = {}): Digest {
  const n = fps.length;
  const vs = extra.versions;
  const mean = new Array<number>(FINGERPRINT_DIM).fill(0);
  const share = Object.fromEntries(ZONES.map((z) => [z, 0])) as Record<Zone, number>;
  for (let i = 0; i < n; i++) {
    const f = fps[i];
    for (let j = 0; j < FINGERPRINT_DIM; j++) mean[j] += f[j];
    const z = zones ? zones[i] : classify(f, vs?.[i] ?? 1).zone;
    share[z] += 1;
  }
  if (n) {
    for (let j = 0; j < FINGERPRINT_DIM; j++) mean[j] /= n;
    for (const z of ZONES) share[z] /= n;
  }
  let dominant: Zone | null = null;
  for (const z of ZONES) if (share[z] > (dominant ? share[dominant] : 0)) dominant = z;
  const n2 = vs ? vs.filter((v) => v === 2).length : 0;
  return {
    version: n > 0 && n2 === n ? 2 : 1,
    mixedVersions: n2 > 0 && n2 < n,
    mean,
    zoneShare: share,
    entropy: mean[3],
    ripple: n ? ripple(mean.slice(4)) : 0,
    dominantZone: dominant,
    nSteps: n,
    tokenCount: extra.tokenCount ?? 0,
    runCount: extra.runCount ?? 0,
  };
}

/** Digest of a whole session (every run, regenerations included). */
export function sessionDigest(session: TraceSession): Digest {
  const pts = stepPoints(session);
  let tokens = 0;
  for (const run of session.runs.values()) tokens += session.rates(run).tokenCount;
  const d = digestOf(
    pts.map((p) => p.fingerprint),
    pts.map((p) => p.zone),
    { tokenCount: tokens, runCount: session.runs.size, versions: pts.map((p) => p.version) },
  );
  d.sinkMass = meanSinkMass(session);
  return d;
}
