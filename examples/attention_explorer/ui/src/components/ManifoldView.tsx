// Manifold: a 2-D map of fingerprint space, coloured by zone. Scope picks which fingerprints
// (this session's steps, recent, saved sessions, all); the sidecar's discovery map places them
// when it runs, the shipped PCA otherwise. "All" also draws the discovery run's training points
// (/discovery/points, faded) under them. Click a point: its details, and a saved session's
// point loads that session. Drawn on one canvas (PointCloud), smooth at 100k points.
import { useEffect, useMemo, useRef, useState } from "react";
import { DISCOVERY_POINTS_LIMIT, type DiscoveryPoints } from "../api/sidecar";
import { stepPoints } from "../analysis/digest";
import { readComponents } from "../analysis/pca";
import { type SavedMeta, loadPoints } from "../storage/savedSessions";
import type { SidecarState } from "../state/sidecar";
import type { TraceSession } from "../trace/session";
import { classify, FINGERPRINT_DIM, ripple, ZONES } from "../zones/zones";
import { buildSet, centroidGroup, discoveryGroup, type Group, groupFromSteps, KIND, type ManifoldSet, savedMeans, savedSteps, type Scope, SCOPES, syntheticGroup } from "../manifold/build";
import { FADED, NOISE, PALETTE, PointCloud } from "../manifold/PointCloud";

interface Props {
  /** The active session ("This session's steps"). */
  session: TraceSession;
  /** The live chat session (its steps join the recent and all scopes). */
  live: TraceSession;
  version: number;
  sessionLabel: string;
  saved: SavedMeta[];
  sidecar: SidecarState;
  onOpenSaved: (id: string) => void;
}

declare global {
  interface Window {
    /** Measurement hook: add n synthetic points to the map (0 removes them); returns render stats. */
    __manifold?: {
      synthetic: (n: number) => void;
      stats: () => {
        points: number;
        /** discovery training points in the set / the sidecar's total for the run */
        discoveryPoints: number;
        discoveryTotal: number | null;
        /** points inside the canvas at the last draw */
        drawn: number;
        lastDrawMs: number;
        draws: number;
        drawMs: number[];
        buildMs: number;
        projection: string;
      };
      cloud: () => PointCloud | null;
    };
  }
}

const rgb = (i: number) => `rgb(${PALETTE[i].join(",")})`;

export function ManifoldView({ session, live, version, sessionLabel, saved, sidecar, onOpenSaved }: Props) {
  const [scope, setScope] = useState<Scope>("session");
  const [set, setSet] = useState<ManifoldSet | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [sel, setSel] = useState(-1);
  const [synthetic, setSynthetic] = useState(0);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const cloud = useRef<PointCloud | null>(null);
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
    if (!source) return null;
    const pts = stepPoints(source);
    if (!pts.length) return null;
    const fps = new Float32Array(pts.length * FINGERPRINT_DIM);
    pts.forEach((p, i) => fps.set(p.fingerprint, i * FINGERPRINT_DIM));
    return groupFromSteps(fps, new Uint8Array(pts.map((p) => ZONES.indexOf(p.zone))), { label: groupLabel }, new Int32Array(pts.map((p) => p.step)));
  }, [source, liveTick, groupLabel]);

  useEffect(() => {
    const ctrl = new AbortController();
    let alive = true;
    (async () => {
      setBusy(true);
      const t0 = performance.now();
      const groups: Group[] = [];
      if (scope === "session") {
        if (sessionGroup) groups.push(sessionGroup);
      } else if (scope === "recent") {
        if (sessionGroup) groups.push(sessionGroup);
        groups.push(...savedSteps(await loadPoints(saved.slice(0, 5).map((m) => m.id)), saved));
      } else if (scope === "saved") {
        groups.push(...savedMeans(saved));
      } else {
        // discovery points first: drawn underneath everything else
        if (useSidecarMap && sidecar.client) {
          const key = `${sidecar.client.base}|${discoveryRun}`;
          try {
            if (discoveryCache.current?.key !== key) {
              discoveryCache.current = { key, points: await sidecar.client.discoveryPoints(DISCOVERY_POINTS_LIMIT, 0, ctrl.signal) };
            }
            const pts = discoveryCache.current.points;
            const dg = discoveryGroup(pts);
            if (dg) groups.push(dg);
            if (alive) {
              setDiscoveryTotal(pts.total);
              setDiscoveryNote(pts.count < pts.total ? `first ${pts.count.toLocaleString()} of ${pts.total.toLocaleString()} discovery points` : null);
            }
          } catch (e) {
            if (ctrl.signal.aborted) throw e;
            if (alive) {
              setDiscoveryTotal(null);
              setDiscoveryNote(`discovery points unavailable (${(e as Error).message}); showing the clusters only`);
            }
          }
        }
        groups.push(...savedSteps(await loadPoints(saved.map((m) => m.id)), saved));
        if (sessionGroup) groups.push(sessionGroup);
        const cg = useSidecarMap ? centroidGroup(sidecar.clusters) : null;
        if (cg) groups.push(cg);
      }
      if (synthetic > 0) groups.unshift(syntheticGroup(synthetic));
      const s = await buildSet(groups, sidecar.pca, useSidecarMap ? sidecar.client : null, ctrl.signal);
      if (!alive) return;
      buildMs.current = performance.now() - t0;
      setSet(s);
      setSel(-1);
      setError(null);
    })()
      .catch((e) => alive && !ctrl.signal.aborted && setError((e as Error).message || String(e)))
      .finally(() => alive && setBusy(false));
    return () => {
      alive = false;
      ctrl.abort();
    };
  }, [scope, sessionGroup, saved, sidecar.client, sidecar.clusters, sidecar.pca, useSidecarMap, discoveryRun, synthetic]);

  // canvas + renderer
  useEffect(() => {
    const c = canvasRef.current;
    if (!c) return;
    const pc = new PointCloud(c);
    cloud.current = pc;
    pc.resize();
    const ro = new ResizeObserver(() => pc.resize());
    ro.observe(c);
    let drag: { x: number; y: number; moved: boolean } | null = null;
    const down = (e: PointerEvent) => {
      drag = { x: e.clientX, y: e.clientY, moved: false };
      c.setPointerCapture(e.pointerId);
    };
    const move = (e: PointerEvent) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.moved) pc.pan(dx, dy);
    };
    const up = (e: PointerEvent) => {
      const wasClick = drag && !drag.moved;
      drag = null;
      if (!wasClick) return;
      const r = c.getBoundingClientRect();
      const i = pc.pick(e.clientX - r.left, e.clientY - r.top);
      pc.highlight = i;
      pc.schedule();
      setSel(i);
    };
    const wheel = (e: WheelEvent) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      pc.zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
    };
    c.addEventListener("pointerdown", down);
    c.addEventListener("pointermove", move);
    c.addEventListener("pointerup", up);
    c.addEventListener("wheel", wheel, { passive: false });
    return () => {
      ro.disconnect();
      pc.destroy();
      cloud.current = null;
      c.removeEventListener("pointerdown", down);
      c.removeEventListener("pointermove", move);
      c.removeEventListener("pointerup", up);
      c.removeEventListener("wheel", wheel);
    };
  }, []);

  useEffect(() => {
    const pc = cloud.current;
    if (!pc || !set) return;
    pc.setData(set.data);
    // cluster labels at the centroids
    pc.overlay = (ctx, toScreen) => {
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#1d2330";
      for (let i = 0; i < set.data.n; i++) {
        if (set.kind[i] !== KIND.centroid && set.kind[i] !== KIND.session) continue;
        const [x, y] = toScreen(set.data.x[i], set.data.y[i]);
        const label = set.kind[i] === KIND.centroid ? `cluster ${set.cluster[i]}` : set.owners[set.ownerIdx[i]].label.slice(0, 24);
        ctx.fillText(label, x + 8, y - 6);
      }
    };
  }, [set]);

  useEffect(() => {
    window.__manifold = {
      synthetic: (n: number) => setSynthetic(Math.max(0, Math.floor(n))),
      stats: () => {
        const s = cloud.current?.stats;
        return {
          points: set?.data.n ?? 0,
          discoveryPoints: set?.discoveryCount ?? 0,
          discoveryTotal,
          drawn: s?.lastDrawn ?? 0,
          lastDrawMs: s?.lastDrawMs ?? 0,
          draws: s?.draws ?? 0,
          drawMs: s?.drawMs ?? [],
          buildMs: buildMs.current,
          projection: set?.projection ?? "",
        };
      },
      cloud: () => cloud.current,
    };
  }, [set, discoveryTotal]);

  // Clicking a point of a saved session loads it.
  useEffect(() => {
    if (!set || sel < 0) return;
    const owner = set.owners[set.ownerIdx[sel]];
    if (owner.savedId) onOpenSaved(owner.savedId);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sel, set]);

  const counts = useMemo(() => {
    const c = new Array(PALETTE.length).fill(0);
    if (set) for (let i = 0; i < set.data.n; i++) c[set.data.color[i] % FADED] += 1;
    return c;
  }, [set]);

  const mapLabel = set?.projection === "sidecar" ? `sidecar map (discovery run ${sidecar.status?.current?.run_id ?? "?"}, UMAP)` : `PCA (PC1 × PC2, ${sidecar.pcaSource} loadings)`;

  return (
    <div className="manifold" data-testid="manifold">
      <div className="toolbar">
        <label>
          Scope{" "}
          <select aria-label="manifold scope" value={scope} onChange={(e) => setScope(e.target.value as Scope)}>
            {SCOPES.map((s) => (
              <option key={s.id} value={s.id}>
                {s.label}
              </option>
            ))}
          </select>
        </label>
        <span className="muted small" data-testid="manifold-projection" data-projection={set?.projection ?? ""}>
          map: {mapLabel}
        </span>
        <span
          className="small"
          data-testid="manifold-count"
          data-points={set?.data.n ?? 0}
          data-discovery-points={set?.discoveryCount ?? 0}
          data-discovery-total={scope === "all" && discoveryTotal !== null ? discoveryTotal : ""}
        >
          {set ? `${set.data.n.toLocaleString()} points` : ""}
          {set && set.discoveryCount > 0 ? ` (${set.discoveryCount.toLocaleString()} discovery)` : ""} {busy ? "· updating…" : ""}
        </span>
        <button className="btn" onClick={() => cloud.current && (cloud.current.fit(), cloud.current.schedule())}>
          Fit
        </button>
        <span className="legend">
          {ZONES.map((z, i) => (
            <span key={z} className="legend-item">
              <i style={{ background: rgb(i) }} /> {z} <span className="muted">{counts[i] || ""}</span>
            </span>
          ))}
          <span className="legend-item">
            <i style={{ background: rgb(NOISE) }} /> noise
          </span>
          {set && set.discoveryCount > 0 && (
            <span className="legend-item muted" title="the discovery run's training points, in lighter tints of their zone">
              <i style={{ background: rgb(FADED + 1) }} /> discovery points (faded)
            </span>
          )}
        </span>
      </div>
      {sidecar.state === "down" && <div className="banner warn small">Sidecar unreachable ({sidecar.error}); using the shipped PCA in the browser.</div>}
      {scope === "all" && useSidecarMap && discoveryNote && (
        <div className="banner warn small" data-testid="manifold-discovery-note">
          {discoveryNote}
        </div>
      )}
      {error && (
        <div className="banner error small" role="alert">
          {error}
        </div>
      )}
      <div className="manifold-body">
        <div className="canvas-wrap">
          <canvas ref={canvasRef} className="manifold-canvas" data-testid="manifold-canvas" />
          {set && set.data.n === 0 && (
            <div className="empty overlay-empty">
              {scope === "session" ? "No fingerprints in this session yet: chat with capture on, or pick another scope." : "Nothing to show: save some sessions first."}
            </div>
          )}
        </div>
        <PointDetails set={set} index={sel} />
      </div>
    </div>
  );
}

function PointDetails({ set, index }: { set: ManifoldSet | null; index: number }) {
  if (!set || index < 0 || index >= set.data.n) {
    return (
      <aside className="details muted" data-testid="manifold-details">
        Click a point for its metrics. Drag to pan, wheel to zoom. Points of saved sessions open that session.
      </aside>
    );
  }
  const owner = set.owners[set.ownerIdx[index]];
  const kind = set.kind[index];
  if (kind === KIND.discovery && owner.discovery) {
    // a training point of the discovery run: the sidecar sends its place, cluster, zone and ids, not its fingerprint
    const j = index - set.starts[set.ownerIdx[index]];
    const d = owner.discovery;
    const cl = set.cluster[index];
    return (
      <aside className="details" data-testid="manifold-details" data-saved-id="">
        <h3>{owner.label}</h3>
        <div className="muted small">
          training point {j} · map ({set.data.x[index].toFixed(2)}, {set.data.y[index].toFixed(2)}) · {cl >= 0 ? `cluster ${cl}` : "noise"}
        </div>
        <div className="zone-line">
          zone <b data-testid="details-zone">{d.zone[j]}</b> <span className="muted">{cl >= 0 ? "(its cluster's zone)" : "(its own zone)"}</span>
        </div>
        <table className="kv">
          <tbody>
            <tr><td>request</td><td>{d.requestId?.[j] ?? "—"}</td></tr>
            <tr><td>session</td><td>{d.sessionId?.[j] ?? "—"}</td></tr>
            <tr><td>step</td><td>{set.step[index] >= 0 ? set.step[index] : "—"}</td></tr>
          </tbody>
        </table>
      </aside>
    );
  }
  const fp = Array.from(set.fps.subarray(index * FINGERPRINT_DIM, (index + 1) * FINGERPRINT_DIM));
  const zone = classify(fp);
  const pcs = readComponents(fp);
  const what = kind === KIND.step ? `step ${set.step[index]}` : kind === KIND.session ? "session mean" : kind === KIND.centroid ? `cluster ${set.cluster[index]} centroid` : "synthetic point";
  return (
    <aside className="details" data-testid="manifold-details" data-saved-id={owner.savedId ?? ""}>
      <h3>{owner.label}</h3>
      <div className="muted small">
        {what} · map ({set.data.x[index].toFixed(2)}, {set.data.y[index].toFixed(2)}){set.cluster[index] >= 0 ? ` · cluster ${set.cluster[index]}` : ""}
      </div>
      <div className="zone-line">
        zone <b data-testid="details-zone">{zone.zone}</b> <span className="muted">confidence {(zone.confidence * 100).toFixed(0)}%</span>
      </div>
      <table className="kv">
        <tbody>
          <tr><td>local mass (d&lt;8)</td><td>{(fp[0] * 100).toFixed(1)}%</td></tr>
          <tr><td>mid mass (8-255)</td><td>{(fp[1] * 100).toFixed(1)}%</td></tr>
          <tr><td>long mass (256+)</td><td>{(fp[2] * 100).toFixed(1)}%</td></tr>
          <tr><td>entropy (normalized)</td><td>{fp[3].toFixed(3)}</td></tr>
          <tr><td>periodicity (ripple)</td><td>{ripple(fp.slice(4)).toFixed(3)}</td></tr>
        </tbody>
      </table>
      <h4>PCA reading</h4>
      <ul className="pcs small">
        {pcs.map((p) => (
          <li key={p.pc}>
            PC{p.pc} ({p.name}): z {p.z.toFixed(2)} — {p.strength} {p.phrase}
          </li>
        ))}
      </ul>
      {owner.savedId && <div className="small muted">Loaded this saved session into the session selector.</div>}
    </aside>
  );
}
