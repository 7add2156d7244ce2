// The Manifold's side panel: the clicked point's owner, place, zone and metrics (or, for a
// discovery training point, what the sidecar knows of it).
import { readComponents, shippedPca } from "../analysis/pca";
import { KIND, type ManifoldSet } from "../manifold/build";
import { classify, FINGERPRINT_DIM, ripple } from "../zones/zones";

export function PointDetails({ set, index }: { set: ManifoldSet | null; index: number }) {
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
  // read with the point's own fingerprint version: its zone thresholds and the shipped PCA of that version
  const version = set.version?.[index] === 2 ? 2 : 1;
  const zone = classify(fp, version);
  const pcs = readComponents(fp, shippedPca(version));
  const ownSink = set.sinkMass?.[index];
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
      <div className="muted small" data-testid="details-version" data-version={version}>
        {version === 2
          ? "fingerprint v2 (sink-aware: position 0 left out, the rest renormalized); read with the v2 thresholds"
          : "fingerprint v1 (the sink, position 0, counted like any key); read with the v1 thresholds"}
      </div>
      <table className="kv">
        <tbody>
          <tr><td>local mass (d&lt;8)</td><td>{(fp[0] * 100).toFixed(1)}%</td></tr>
          <tr><td>mid mass (8-255)</td><td>{(fp[1] * 100).toFixed(1)}%</td></tr>
          <tr><td>long mass (256+)</td><td>{(fp[2] * 100).toFixed(1)}%</td></tr>
          <tr><td>entropy (normalized)</td><td>{fp[3].toFixed(3)}</td></tr>
          <tr><td>periodicity (ripple)</td><td>{ripple(fp.slice(4)).toFixed(3)}</td></tr>
          {typeof ownSink === "number" && Number.isFinite(ownSink) && (
            <tr data-testid="details-step-sink-mass" title="the server's sink_mass of this step (attention on the first token), mean over its captured layers">
              <td>sink mass (this {kind === KIND.step ? "step" : "point"})</td>
              <td>{(ownSink * 100).toFixed(1)}%</td>
            </tr>
          )}
          {typeof owner.sinkMass === "number" && (
            <tr data-testid="details-sink-mass" title="the server's sink_mass (attention on the first token), mean over this owner's steps; the map's fingerprint does not contain it">
              <td>sink mass ({owner.label}, mean)</td>
              <td>{(owner.sinkMass * 100).toFixed(1)}%</td>
            </tr>
          )}
        </tbody>
      </table>
      <p className="muted small">
        The masses are this point's fingerprint as sent or estimated from the capture:{" "}
        {version === 2 ? "sink-aware (v2), so local/mid/long leave the sink out" : "v1, so local/mid/long count the sink (position 0)"}; the sink mass is
        measured separately.
      </p>
      <h4>PCA reading (shipped v{version} loadings)</h4>
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
