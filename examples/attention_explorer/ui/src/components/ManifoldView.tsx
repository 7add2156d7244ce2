// Manifold: a 2-D map of fingerprint space, coloured by zone. Scope picks which fingerprints
// (this session's steps, recent, saved sessions, all); the sidecar's discovery map places them
// when it runs, the shipped PCA otherwise. "All" also draws the discovery run's training points
// (/discovery/points, faded) under them. Click a point: its details, and a saved session's
// point loads that session. Drawn on one canvas (PointCloud), smooth at 100k points.
// This view composes the parts: data (useManifoldData), toolbar, canvas and side panel.
import { useEffect, useRef, useState } from "react";
import type { ManifoldSet, Scope } from "../manifold/build";
import type { PointCloud } from "../manifold/PointCloud";
import { type ManifoldDataInput, useManifoldData } from "../manifold/useManifoldData";
import { ManifoldCanvas } from "./ManifoldCanvas";
import { PointDetails } from "./ManifoldDetails";
import { ManifoldToolbar } from "./ManifoldToolbar";

/** The data hook's inputs that come from the app (scope and synthetic points are this view's). */
interface Props extends Omit<ManifoldDataInput, "scope" | "synthetic"> {
  onOpenSaved: (id: string) => void;
}

declare global {
  interface Window {
    /** Measurement hook: add n synthetic points to the map (0 removes them); returns render stats. Test builds only (__TEST_HOOKS__). */
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

export function ManifoldView({ session, live, version, sessionLabel, saved, sidecar, onOpenSaved }: Props) {
  const [scope, setScope] = useState<Scope>("session");
  const [synthetic, setSynthetic] = useState(0);
  const { set, error, busy, useSidecarMap, discoveryTotal, discoveryNote, buildMs } = useManifoldData({ scope, session, live, version, sessionLabel, saved, sidecar, synthetic });
  const cloud = useRef<PointCloud | null>(null);
  // The clicked point, in the set it was picked from: a new set clears it.
  const [picked, setPicked] = useState<{ set: ManifoldSet | null; index: number }>({ set: null, index: -1 });
  const sel = picked.set === set ? picked.index : -1;

  useEffect(() => {
    if (!__TEST_HOOKS__) return;
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
  }, [set, discoveryTotal, buildMs]);

  // Clicking a point of a saved session loads it.
  useEffect(() => {
    if (!set || sel < 0) return;
    const owner = set.owners[set.ownerIdx[sel]];
    if (owner.savedId) onOpenSaved(owner.savedId);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sel, set]);

  const fit = () => {
    const pc = cloud.current;
    if (!pc) return;
    pc.fit();
    pc.schedule();
  };

  return (
    <div className="manifold" data-testid="manifold">
      <ManifoldToolbar scope={scope} onScope={setScope} set={set} busy={busy} sidecar={sidecar} discoveryTotal={discoveryTotal} onFit={fit} />
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
        <ManifoldCanvas set={set} cloudRef={cloud} onPick={(index) => setPicked({ set, index })}>
          {set && set.data.n === 0 && (
            <div className="empty overlay-empty">
              {scope === "session" ? "No fingerprints in this session yet: chat with capture on, or pick another scope." : "Nothing to show: save some sessions first."}
            </div>
          )}
        </ManifoldCanvas>
        <PointDetails set={set} index={sel} />
      </div>
    </div>
  );
}
