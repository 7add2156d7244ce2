// Router: the zone of the running generation (a rolling window of its step fingerprints),
// the evidence behind it, and the sampling settings the zone rules recommend
// (sgl_kernel/zones.py SAMPLING_HINTS + CAPTURE_MODE_HINTS, the ones the sidecars serve).
// "Apply to next run" stores the recommendation; the next request uses it once.
import { useEffect, useMemo, useState } from "react";
import { digestOf, digestVersion, meanSinkMass, stepPoints } from "../analysis/digest";
import type { ClassifyResult } from "../api/sidecar";
import type { RouterApply } from "../state/routerApply";
import type { SidecarState } from "../state/sidecar";
import type { Run, TraceSession } from "../trace/session";
import { classify, ripple, samplingHints, thresholdsFor, type Zone, ZONE_DESCRIPTIONS, ZONES } from "../zones/zones";
import { PALETTE } from "../manifold/PointCloud";

export const WINDOW = 16;
/** Below this confidence the Router says its zone (and so its recommendation) is a weak reading. */
export const LOW_CONFIDENCE = 0.3;

interface Props {
  session: TraceSession;
  version: number;
  sidecar: SidecarState;
  pending: RouterApply | null;
  onApply: (a: RouterApply) => void;
  onCancel: () => void;
}

function Meter({ label, value, threshold, note, testId }: { label: string; value: number; threshold: number; note: string; testId: string }) {
  const pct = Math.max(0, Math.min(1, value)) * 100;
  const over = value >= threshold;
  return (
    <div className="ev-meter" data-testid={testId} data-value={value.toFixed(4)}>
      <div className="meter-head">
        <span>{label}</span>
        <b>{value.toFixed(2)}</b>
      </div>
      <div className="meter-track">
        <div className={`meter-fill ${over ? "over" : ""}`} style={{ width: `${pct}%` }} />
        <div className="meter-threshold" style={{ left: `${threshold * 100}%` }} title={`threshold ${threshold}`} />
      </div>
      <div className="muted small">{note}</div>
    </div>
  );
}

export function RouterView({ session, version, sidecar, pending, onApply, onCancel }: Props) {
  const run: Run | undefined = session.latestRun();
  const pts = useMemo(() => {
    void version;
    return run ? stepPoints(session, [run.id]) : [];
  }, [session, run, version]);
  const recent = pts.slice(-WINDOW);
  // The window's mean is read with its version's thresholds: 2 when every step in it is sink-aware.
  const digest = recent.length ? digestOf(recent.map((p) => p.fingerprint), undefined, { versions: recent.map((p) => p.version) }) : null;
  const fpVersion = digest ? digestVersion(digest) : 1;
  const result = digest ? classify(digest.mean, fpVersion) : null;
  const zone: Zone | null = result?.zone ?? null;
  const hint = digest && zone ? samplingHints(digest.mean, fpVersion) : null;
  const { thresholds: TH, focused: FOCUSED } = thresholdsFor(fpVersion);

  // The sidecar's view of the same window (cluster of the discovery run), at most once a second.
  const [remote, setRemote] = useState<ClassifyResult | null>(null);
  const [remoteErr, setRemoteErr] = useState<string | null>(null);
  const meanKey = digest ? digest.mean.map((x) => x.toFixed(4)).join(",") : "";
  useEffect(() => {
    if (!digest || !sidecar.ready || !sidecar.client) {
      setRemote(null);
      return;
    }
    const ctrl = new AbortController();
    const t = setTimeout(() => {
      sidecar
        .client!.classify([digest.mean], ctrl.signal)
        .then((r) => {
          setRemote(r[0] ?? null);
          setRemoteErr(null);
        })
        .catch((e) => !ctrl.signal.aborted && setRemoteErr((e as Error).message));
    }, 1000);
    return () => {
      clearTimeout(t);
      ctrl.abort();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [meanKey, sidecar.ready, sidecar.client]);

  if (!run || !digest || !result || !hint || !zone) {
    return (
      <div className="router empty" data-testid="router">
        <h2>No fingerprints yet</h2>
        <p>Run a generation with capture on (any mode): the Router classifies its last {WINDOW} steps as they stream.</p>
        {pending && <PendingApply pending={pending} onCancel={onCancel} />}
      </div>
    );
  }
  const m = digest.mean;
  const rip = ripple(m.slice(4));
  const sink = meanSinkMass(session, undefined, recent);
  const low = result.confidence < LOW_CONFIDENCE;
  const source = recent.length && run.steps.get(recent[recent.length - 1].step)?.fingerprint ? "server" : run.steps.values().next().value?.sketch ? "sketch" : "topk";
  const lastFp = run.steps.get(pts[pts.length - 1].step)?.fingerprint;
  const zi = ZONES.indexOf(zone);
  return (
    <div className="router" data-testid="router">
      <section className="router-zone" style={{ borderColor: `rgb(${PALETTE[zi].join(",")})` }}>
        <div className="muted small">
          {run.status === "streaming" ? "live" : run.status} · run {run.id} · last {recent.length} of {pts.length} steps
        </div>
        <h2 data-testid="router-zone" data-zone={zone}>
          {zone}
        </h2>
        <div>
          confidence <b data-testid="router-confidence">{(result.confidence * 100).toFixed(0)}%</b>
        </div>
        <p className="muted">{ZONE_DESCRIPTIONS[zone]}</p>
        <p className="muted small" data-testid="router-measured" data-version={fpVersion} data-mixed={digest.mixedVersions ? "1" : "0"}>
          Measured: the mean of the last {recent.length} step fingerprints of this run,{" "}
          {source === "server" ? "as the server sent them" : source === "sketch" ? "from the sketches (exact)" : "estimated from the raw top-k (attention outside the top-k is not counted)"}
          {"; "}
          {digest.mixedVersions
            ? "the window mixes v1 and v2 steps, so its mean mixes two definitions and is read with the v1 thresholds"
            : fpVersion === 2
              ? "fingerprint v2, sink-aware: position 0 left out, the rest renormalized to sum 1"
              : "fingerprint v1: over every key, the sink (position 0) counted in local/mid/long"}
          ; the zone is the rule-based classify() of that mean with the v{fpVersion} thresholds.
        </p>
        <div className="zone-strip" title="zone of each step (oldest left)">
          {pts.slice(-120).map((p, i) => (
            <i key={i} style={{ background: `rgb(${PALETTE[ZONES.indexOf(p.zone)].join(",")})` }} title={`step ${p.step}: ${p.zone}`} />
          ))}
        </div>
      </section>
      <section className="router-evidence">
        <h3>Evidence (mean of the window)</h3>
        <Meter testId="meter-local" label="local mass (d < 8)" value={m[0]} threshold={TH.syntax_floor} note={`syntax_floor at ≥ ${TH.syntax_floor}`} />
        <Meter testId="meter-mid" label="mid mass (8 ≤ d < 256)" value={m[1]} threshold={TH.semantic_bridge} note={`semantic_bridge at ≥ ${TH.semantic_bridge}`} />
        <Meter testId="meter-long" label="long mass (d ≥ 256)" value={m[2]} threshold={TH.long_range} note={`long_range at ≥ ${TH.long_range}`} />
        <Meter testId="meter-entropy" label="entropy (normalized)" value={m[3]} threshold={TH.diffuse} note={`diffuse at ≥ ${TH.diffuse}, focused at ≤ ${FOCUSED}`} />
        <Meter testId="meter-periodicity" label="periodicity (ripple)" value={rip} threshold={TH.structure_ripple} note={`structure_ripple at ≥ ${TH.structure_ripple}`} />
        {sink !== null && (
          <div className="ev-meter" data-testid="meter-sink" data-value={sink.toFixed(4)}>
            <div className="meter-head">
              <span>sink mass (sink positions; default the first token)</span>
              <b>{sink.toFixed(2)}</b>
            </div>
            <div className="meter-track">
              <div className="meter-fill" style={{ width: `${Math.min(1, sink) * 100}%`, background: "var(--sink)" }} />
            </div>
            <div className="muted small">
              the server's exact sink_mass, mean of the window; no zone uses it
              {fpVersion === 2 ? " (the masses above leave it out)" : m[0] + m[1] + m[2] > 0.999 && sink > 0.05 ? " (here local/mid/long still include it)" : ""}
            </div>
          </div>
        )}
      </section>
      <section className="router-rec">
        <h3>Recommended for the next run</h3>
        {low && (
          <div className="pending-apply" role="status" data-testid="router-low-confidence">
            Low confidence ({(result.confidence * 100).toFixed(0)}% &lt; {LOW_CONFIDENCE * 100}%): the window does not clearly fit {zone}, so this recommendation
            is a weak guess. Let the run go on, or look at the evidence before applying it.
          </div>
        )}
        <table className="kv" data-testid="router-recommendation">
          <tbody>
            <tr><td>temperature</td><td data-testid="rec-temperature">{hint.temperature}</td></tr>
            <tr><td>top_p</td><td data-testid="rec-top-p">{hint.top_p}</td></tr>
            <tr><td>capture mode</td><td data-testid="rec-capture">{hint.capture_mode}</td></tr>
          </tbody>
        </table>
        <p className="muted small">
          From the zone rules in sgl_kernel/zones.py (SAMPLING_HINTS, CAPTURE_MODE_HINTS), the same the sidecars serve, for the zone read with the v
          {fpVersion} thresholds.
        </p>
        <button
          className="btn primary"
          onClick={() =>
            onApply({
              zone,
              confidence: result.confidence,
              temperature: hint.temperature,
              top_p: hint.top_p,
              capture_mode: hint.capture_mode,
              basis: `${run.id}, last ${recent.length} steps`,
              appliedAt: new Date().toISOString(),
            })
          }
        >
          {low ? "Apply anyway" : "Apply to next run"}
        </button>
        {pending && <PendingApply pending={pending} onCancel={onCancel} />}
        <h3>Server and sidecar</h3>
        <ul className="small">
          {lastFp?.cluster_id !== undefined && (
            <li data-testid="router-server-cluster">
              server hint (latest step): cluster {lastFp.cluster_id} · {lastFp.cluster_zone}
            </li>
          )}
          {run.adaptiveSampling ? (
            <li
              data-testid="router-adaptive"
              data-step={run.adaptiveSampling.step}
              data-cluster-id={String(run.adaptiveSampling.cluster_id)}
              data-zone={run.adaptiveSampling.zone ?? ""}
              data-after-temperature={String(run.adaptiveSampling.after.temperature)}
              data-after-top-p={String(run.adaptiveSampling.after.top_p)}
            >
              adaptive sampling switched at step {run.adaptiveSampling.step} ({run.adaptiveSampling.zone ?? "?"}, cluster {String(run.adaptiveSampling.cluster_id)}): T{" "}
              {String(run.adaptiveSampling.before.temperature)} → {String(run.adaptiveSampling.after.temperature)}, top_p {String(run.adaptiveSampling.before.top_p)} →{" "}
              {String(run.adaptiveSampling.after.top_p)}
              {run.adaptiveConfig?.steps ? ` (after ${run.adaptiveConfig.steps} steps in the cluster)` : ""}
            </li>
          ) : run.adaptiveConfig?.enabled ? (
            <li className="muted" data-testid="router-adaptive-config">
              adaptive sampling on ({run.adaptiveConfig.source === "server_default" ? "server default" : "requested"}
              {run.adaptiveConfig.steps ? `, switches after ${run.adaptiveConfig.steps} steps in one cluster` : ""}): no switch {run.status === "streaming" ? "yet" : "in this run"}
            </li>
          ) : (
            <li className="muted">{run.adaptiveConfig ? "adaptive sampling off for this run" : "no adaptive sampling switch reported for this run"}</li>
          )}
          {run.routerApplied && (
            <li data-testid="router-run-applied">
              this run used the Router's {run.routerApplied.zone} settings
              {run.routerApplied.confidence !== null ? ` (confidence ${(run.routerApplied.confidence * 100).toFixed(0)}%)` : ""}: T {run.routerApplied.temperature}, top_p{" "}
              {run.routerApplied.top_p}, capture {run.routerApplied.capture_mode}
            </li>
          )}
          {sidecar.state === "off" && <li className="muted">no sidecar configured (Settings → sidecar URL)</li>}
          {sidecar.state !== "off" && !sidecar.ready && <li className="muted">sidecar {sidecar.state}{sidecar.error ? `: ${sidecar.error}` : ", no discovery artifacts loaded"}</li>}
          {remote && (
            <li data-testid="router-sidecar" data-cluster-id={remote.cluster_id} data-zone={remote.zone} data-run-id={String(remote.run_id)}>
              sidecar: cluster {remote.cluster_id} ({remote.zone}, confidence {(remote.confidence * 100).toFixed(0)}%
              {remote.out_of_distribution ? ", out of distribution" : ""}) → T {remote.sampling_hints.temperature}, top_p {remote.sampling_hints.top_p}, capture{" "}
              {remote.sampling_hints.capture_mode}
            </li>
          )}
          {remoteErr && <li className="error">sidecar: {remoteErr}</li>}
        </ul>
      </section>
    </div>
  );
}

export function PendingApply({ pending, onCancel }: { pending: RouterApply; onCancel: () => void }) {
  return (
    <div className="pending-apply" data-testid="pending-apply">
      Next run uses the Router's <b>{pending.zone}</b> settings{pending.confidence !== undefined ? ` (confidence ${(pending.confidence * 100).toFixed(0)}%)` : ""}: T {pending.temperature}, top_p{" "}
      {pending.top_p}, capture {pending.capture_mode}{" "}
      <button className="link-btn" onClick={onCancel}>
        cancel
      </button>
    </div>
  );
}
