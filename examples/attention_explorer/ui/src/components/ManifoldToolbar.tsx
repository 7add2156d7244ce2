// The Manifold's toolbar: scope, which map places the points, point counts, Fit and the zone legend.
import { useMemo } from "react";
import { type ManifoldSet, type Scope, SCOPES } from "../manifold/build";
import { FADED, NOISE, PALETTE } from "../manifold/PointCloud";
import type { SidecarState } from "../state/sidecar";
import { ZONES } from "../zones/zones";

interface Props {
  scope: Scope;
  onScope: (scope: Scope) => void;
  set: ManifoldSet | null;
  busy: boolean;
  sidecar: SidecarState;
  /** The sidecar's count of discovery points for the run ("All"). */
  discoveryTotal: number | null;
  onFit: () => void;
}

const rgb = (i: number) => `rgb(${PALETTE[i].join(",")})`;

export function ManifoldToolbar({ scope, onScope, set, busy, sidecar, discoveryTotal, onFit }: Props) {
  const counts = useMemo(() => {
    const c = new Array(PALETTE.length).fill(0);
    if (set) for (let i = 0; i < set.data.n; i++) c[set.data.color[i] % FADED] += 1;
    return c;
  }, [set]);

  const mapLabel = set?.projection === "sidecar" ? `sidecar map (discovery run ${sidecar.status?.current?.run_id ?? "?"}, UMAP)` : `PCA (PC1 × PC2, ${set?.pcaVersion ? `shipped v${set.pcaVersion}` : sidecar.pcaSource} loadings)`;

  return (
    <div className="toolbar">
      <label>
        Scope{" "}
        <select aria-label="manifold scope" value={scope} onChange={(e) => onScope(e.target.value as Scope)}>
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
      <button className="btn" onClick={onFit}>
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
  );
}
