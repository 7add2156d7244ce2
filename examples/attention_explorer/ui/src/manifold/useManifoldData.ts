// The Manifold's data: for a scope, the point groups (the session's steps, saved sessions from
// IndexedDB, the sidecar's discovery points and clusters) merged in draw order, then placed on
// the map by buildSet. Rebuilt when the scope or a source changes; the live session's points at
// most every 500 ms while it streams.
import { useEffect, useMemo, useRef, useState } from "react";
import { meanSinkMass, stepPoints } from "../analysis/digest";
import { shippedPca } from "../analysis/pca";
import { DISCOVERY_POINTS_LIMIT, type DiscoveryPoints, type SidecarClient } from "../api/sidecar";
import type { SidecarState } from "../state/sidecar";
import { loadPoints, type SavedMeta, type SavedPoints } from "../storage/savedSessions";
import type { TraceSession } from "../trace/session";
import { FINGERPRINT_DIM, ZONES } from "../zones/zones";
import { buildSet, centroidGroup, discoveryGroup, type Group, groupFromSteps, groupsVersion, type ManifoldSet, savedMeans, savedSteps, type Scope, syntheticGroup } from "./build";

/** Saved sessions whose step points a scope draws (read from IndexedDB); null: the scope reads none. */
export function savedIdsOf(scope: Scope, saved: SavedMeta[]): string[] | null {
  if (scope === "recent") return saved.slice(0, 5).map((m) => m.id);
  if (scope === "all") return saved.map((m) => m.id);
  return null;
}

/** What a scope's groups come from, already loaded. */
export interface ScopeSources {
  /** The session's steps ("This session's steps") or the live chat's (the other scopes). */
  session: Group | null;
  saved: SavedMeta[];
  /** Step points of the saved sessions in savedIdsOf(scope). */
  savedPoints: SavedPoints[];
  /** The discovery run's training points ("All", sidecar map). */
  discovery: Group | null;
  /** The discovery clusters ("All", sidecar map). */
  centroids: Group | null;
  /** Synthetic measurement points (window.__manifold.synthetic). */
  synthetic: Group | null;
  /** Trace id of the session group: a saved copy of that same trace is not drawn a second time. */
  sessionTraceId?: string;
}

/** The groups a scope draws, in draw order: earlier groups are drawn underneath later ones. */
export function scopeGroups(scope: Scope, src0: ScopeSources): Group[] {
  // The live session and its own saved copy are the same steps: count them once (the live group,
  // which is the newer of the two).
  const dup = src0.session && src0.sessionTraceId ? new Set(src0.saved.filter((m) => m.traceId === src0.sessionTraceId).map((m) => m.id)) : null;
  const src = dup?.size ? { ...src0, savedPoints: src0.savedPoints.filter((p) => !dup.has(p.id)) } : src0;
  const groups: Group[] = [];
  if (src.synthetic) groups.push(src.synthetic);
  if (scope === "session") {
    if (src.session) groups.push(src.session);
  } else if (scope === "recent") {
    if (src.session) groups.push(src.session);
    groups.push(...savedSteps(src.savedPoints, src.saved));
  } else if (scope === "saved") {
    groups.push(...savedMeans(src.saved));
  } else {
    // discovery points first: drawn underneath everything else
    if (src.discovery) groups.push(src.discovery);
    groups.push(...savedSteps(src.savedPoints, src.saved));
    if (src.session) groups.push(src.session);
    if (src.centroids) groups.push(src.centroids);
  }
  return groups;
}

/** One group of a session's decode steps, or null when it has none. */
export function sessionStepsGroup(source: TraceSession, label: string): Group | null {
  const pts = stepPoints(source);
  if (!pts.length) return null;
  const fps = new Float32Array(pts.length * FINGERPRINT_DIM);
  pts.forEach((p, i) => fps.set(p.fingerprint, i * FINGERPRINT_DIM));
  return groupFromSteps(fps, new Uint8Array(pts.map((p) => ZONES.indexOf(p.zone))), { label, sinkMass: meanSinkMass(source) }, new Int32Array(pts.map((p) => p.step)), {
    versions: new Uint8Array(pts.map((p) => p.version)),
    sinkMasses: new Float32Array(pts.map((p) => p.sinkMass ?? NaN)),
  });
}

/** The note under the toolbar when the sidecar sent only part of the run's points. */
export const discoveryNoteOf = (pts: DiscoveryPoints): string | null =>
  pts.count < pts.total ? `first ${pts.count.toLocaleString()} of ${pts.total.toLocaleString()} discovery points` : null;

export interface ManifoldDataInput {
  scope: Scope;
  /** The active session ("This session's steps"). */
  session: TraceSession;
  /** The live chat session (its steps join the recent and all scopes). */
  live: TraceSession;
  version: number;
  sessionLabel: string;
  saved: SavedMeta[];
  sidecar: SidecarState;
  /** Synthetic points to add (0: none). */
  synthetic: number;
}

export interface ManifoldData {
  set: ManifoldSet | null;
  error: string | null;
  busy: boolean;
  /** Whether the sidecar's discovery map places the points (else the PCA). */
  useSidecarMap: boolean;
  /** The sidecar's count of discovery points for the run (last "All" build). */
  discoveryTotal: number | null;
  discoveryNote: string | null;
  /** Time of the last build, ms. */
  buildMs: { current: number };
}

export function useManifoldData({ scope, session, live, version, sessionLabel, saved, sidecar, synthetic }: ManifoldDataInput): ManifoldData {
  const [set, setSet] = useState<ManifoldSet | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const buildMs = useRef(0);
  const useSidecarMap = sidecar.state === "up" && sidecar.ready && !!sidecar.client;
  const discoveryRun = sidecar.status?.current?.run_id ?? null;
  // The discovery run's training points, fetched once per sidecar and run.
  const discoveryCache = useRef<{ key: string; points: DiscoveryPoints } | null>(null);
  const [discoveryTotal, setDiscoveryTotal] = useState<number | null>(null);
  const [discoveryNote, setDiscoveryNote] = useState<string | null>(null);

  // Rebuild the live session's points at most every 500 ms while it streams.
  const [liveTick, setLiveTick] = useState(version);
  useEffect(() => {
    const t = setTimeout(() => setLiveTick(version), 500);
    return () => clearTimeout(t);
  }, [version]);

  // The active session for its own scope; the live chat session in the others (a saved
  // session opened from the map is already there as saved points).
  const source = scope === "session" ? session : scope === "saved" ? null : live;
  const groupLabel = scope === "session" ? sessionLabel : "Live session";
  const sessionGroup = useMemo((): Group | null => {
    void liveTick;
    return source ? sessionStepsGroup(source, groupLabel) : null;
  }, [source, liveTick, groupLabel]);

  useEffect(() => {
    const ctrl = new AbortController();
    let alive = true;
    // The discovery points ("All" on the sidecar map), cached; null, with a note, when unavailable.
    const loadDiscovery = async (client: SidecarClient): Promise<Group | null> => {
      const key = `${client.base}|${discoveryRun}`;
      try {
        if (discoveryCache.current?.key !== key) {
          discoveryCache.current = { key, points: await client.discoveryPoints(DISCOVERY_POINTS_LIMIT, 0, ctrl.signal) };
        }
        const pts = discoveryCache.current.points;
        const dg = discoveryGroup(pts);
        if (alive) {
          setDiscoveryTotal(pts.total);
          setDiscoveryNote(discoveryNoteOf(pts));
        }
        return dg;
      } catch (e) {
        if (ctrl.signal.aborted) throw e;
        if (alive) {
          setDiscoveryTotal(null);
          setDiscoveryNote(`discovery points unavailable (${(e as Error).message}); showing the clusters only`);
        }
        return null;
      }
    };
    (async () => {
      setBusy(true);
      const t0 = performance.now();
      const discovery = scope === "all" && useSidecarMap && sidecar.client ? await loadDiscovery(sidecar.client) : null;
      const ids = savedIdsOf(scope, saved);
      const savedPoints = ids ? await loadPoints(ids) : [];
      const groups = scopeGroups(scope, {
        session: sessionGroup,
        sessionTraceId: source?.traceId,
        saved,
        savedPoints,
        discovery,
        centroids: scope === "all" && useSidecarMap ? centroidGroup(sidecar.clusters) : null,
        synthetic: synthetic > 0 ? syntheticGroup(synthetic) : null,
      });
      // Without the sidecar's interpretation, the shipped PCA of the points' version (v2 when every
      // point with a fingerprint is sink-aware).
      const pcaVersion = sidecar.pcaSource === "sidecar" ? null : groupsVersion(groups);
      const s = await buildSet(groups, pcaVersion === null ? sidecar.pca : shippedPca(pcaVersion), useSidecarMap ? sidecar.client : null, ctrl.signal);
      s.pcaVersion = pcaVersion;
      if (!alive) return;
      buildMs.current = performance.now() - t0;
      setSet(s);
      setError(null);
    })()
      .catch((e) => alive && !ctrl.signal.aborted && setError((e as Error).message || String(e)))
      .finally(() => alive && setBusy(false));
    return () => {
      alive = false;
      ctrl.abort();
    };
  }, [scope, sessionGroup, saved, sidecar.client, sidecar.clusters, sidecar.pca, useSidecarMap, discoveryRun, synthetic]);

  return { set, error, busy, useSidecarMap, discoveryTotal, discoveryNote, buildMs };
}
