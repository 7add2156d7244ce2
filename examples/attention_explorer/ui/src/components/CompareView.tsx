// Compare two saved traces: one similarity score (formula shown), the key differences in
// sentences, a metrics diff with coloured bars, both distance histograms overlaid, and the
// PCA reading (PC1..PC4 with their names) of the difference of their mean fingerprints.
import { useEffect, useState } from "react";
import { differenceSentences, FORMULA, pairVersion, pcaDifference, similarity, WEIGHTS } from "../analysis/compare";
import { type Digest, digestVersion, digestVersionLabel } from "../analysis/digest";
import type { PcaModel } from "../analysis/pca";
import type { SavedMeta } from "../storage/savedSessions";

const LABELS = ["0-1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1k", "2k", "4k", "8k", "16k", "32k+"];

function Overlay({ a, b, width = 520, height = 170 }: { a: number[]; b: number[]; width?: number; height?: number }) {
  const max = Math.max(1e-9, ...a, ...b);
  const bw = width / a.length;
  const h = height - 20;
  const line = (v: number[]) => v.map((x, i) => `${i * bw + bw / 2},${h - (x / max) * (h - 6)}`).join(" ");
  return (
    <svg className="hist-overlay" width={width} height={height} role="img" aria-label="distance histograms overlaid" data-testid="compare-histograms">
      {a.map((v, i) => (
        <rect key={`a${i}`} className="bar-a" x={i * bw + 2} y={h - (v / max) * (h - 6)} width={bw / 2 - 2} height={(v / max) * (h - 6)}>
          <title>{`A, distance ${LABELS[i]}: ${(v * 100).toFixed(1)}%`}</title>
        </rect>
      ))}
      {b.map((v, i) => (
        <rect key={`b${i}`} className="bar-b" x={i * bw + bw / 2} y={h - (v / max) * (h - 6)} width={bw / 2 - 2} height={(v / max) * (h - 6)}>
          <title>{`B, distance ${LABELS[i]}: ${(v * 100).toFixed(1)}%`}</title>
        </rect>
      ))}
      <polyline className="line-a" points={line(a)} />
      <polyline className="line-b" points={line(b)} />
      {LABELS.map((l, i) =>
        i % 2 === 0 ? (
          <text key={l} x={i * bw + bw / 2} y={height - 5} textAnchor="middle" className="axis">
            {l}
          </text>
        ) : null,
      )}
      <line x1={0} x2={width} y1={h} y2={h} className="axis-line" />
    </svg>
  );
}

interface Metric {
  key: string;
  label: string;
  a: number;
  b: number;
  /** scale of the bar (the metric's range) */
  max: number;
  fmt: (x: number) => string;
}

function metricsOf(a: Digest, b: Digest): Metric[] {
  const p = (x: number) => `${(x * 100).toFixed(1)}%`;
  const f = (x: number) => x.toFixed(3);
  return [
    { key: "local", label: "local mass", a: a.mean[0], b: b.mean[0], max: 1, fmt: p },
    { key: "mid", label: "mid mass", a: a.mean[1], b: b.mean[1], max: 1, fmt: p },
    { key: "long", label: "long mass", a: a.mean[2], b: b.mean[2], max: 1, fmt: p },
    { key: "entropy", label: "entropy", a: a.entropy, b: b.entropy, max: 1, fmt: f },
    { key: "periodicity", label: "periodicity", a: a.ripple, b: b.ripple, max: 1, fmt: f },
    ...(typeof a.sinkMass === "number" && typeof b.sinkMass === "number"
      ? [{ key: "sink", label: "sink mass (server sink_mass)", a: a.sinkMass, b: b.sinkMass, max: 1, fmt: p }]
      : []),
    { key: "steps", label: "captured steps", a: a.nSteps, b: b.nSteps, max: Math.max(1, a.nSteps, b.nSteps), fmt: (x) => String(Math.round(x)) },
    { key: "tokens", label: "output tokens", a: a.tokenCount, b: b.tokenCount, max: Math.max(1, a.tokenCount, b.tokenCount), fmt: (x) => String(Math.round(x)) },
  ];
}

/** `pca`: the sidecar's PCA interpretation when it serves one; without it, the shipped PCA of the pair's version. */
export function CompareView({ saved, pca }: { saved: SavedMeta[]; pca?: PcaModel | null }) {
  const [ia, setA] = useState<string>("");
  const [ib, setB] = useState<string>("");
  useEffect(() => {
    // default: the two most recent
    if (!saved.find((s) => s.id === ia)) setA(saved[1]?.id ?? saved[0]?.id ?? "");
    if (!saved.find((s) => s.id === ib)) setB(saved[0]?.id ?? "");
  }, [saved, ia, ib]);
  if (saved.length < 2) {
    return (
      <div className="empty" data-testid="compare">
        <h2>Save two sessions to compare them</h2>
        <p>Use “Save” in the top bar after a run; saved sessions stay in this browser (IndexedDB).</p>
      </div>
    );
  }
  const A = saved.find((s) => s.id === ia);
  const B = saved.find((s) => s.id === ib);
  const pick = (value: string, set: (v: string) => void, label: string) => (
    <label>
      {label}{" "}
      <select aria-label={`compare ${label}`} value={value} onChange={(e) => set(e.target.value)}>
        {saved.map((s) => (
          <option key={s.id} value={s.id}>
            {s.name} ({new Date(s.savedAt).toLocaleString()})
          </option>
        ))}
      </select>
    </label>
  );
  const body = (() => {
    if (!A || !B) return null;
    if (!A.digest.nSteps || !B.digest.nSteps) return <div className="empty">One of the two has no captured fingerprints (capture was off): nothing to compare.</div>;
    const sim = similarity(A.digest, B.digest);
    const sentences = differenceSentences(A.digest, B.digest, ["A", "B"]);
    const version = pairVersion(A.digest, B.digest);
    const pcs = pcaDifference(A.digest, B.digest, pca ?? undefined);
    const sameVersion = digestVersion(A.digest) === digestVersion(B.digest) && !A.digest.mixedVersions && !B.digest.mixedVersions;
    const measuredOf = (d: Digest) =>
      d.mixedVersions
        ? "mixed v1/v2 steps, so its mean mixes two definitions"
        : digestVersion(d) === 2
          ? "v2, sink-aware: position 0 left out, the rest renormalized"
          : "v1: every key, the sink (position 0) counted in local/mid/long";
    return (
      <div className="compare-grid">
        <section className="score-card">
          <div className="muted small">similarity</div>
          <div className="score" data-testid="compare-score" data-score={sim.score.toFixed(6)}>
            {(sim.score * 100).toFixed(1)}%
          </div>
          <code className="formula small" data-testid="compare-formula">{FORMULA}</code>
          <table className="kv small">
            <tbody>
              <tr><td>cosine of mean fingerprints</td><td>{sim.cosine.toFixed(4)} × {WEIGHTS.cosine}</td></tr>
              <tr><td>zone agreement</td><td>{sim.zoneAgreement.toFixed(4)} × {WEIGHTS.zoneAgreement}</td></tr>
              <tr><td>entropy difference</td><td>(1 − {sim.entropyDiff.toFixed(4)}) × {WEIGHTS.entropy}</td></tr>
            </tbody>
          </table>
        </section>
        <section>
          <h3>Key differences (B relative to A)</h3>
          <ul data-testid="compare-differences">
            {sentences.map((s, i) => (
              <li key={i}>{s}</li>
            ))}
          </ul>
          <p className="muted small" data-testid="compare-measured" data-version-a={digestVersion(A.digest)} data-version-b={digestVersion(B.digest)}>
            Measured: the mean step fingerprint of each saved session (A: {A.digest.nSteps} steps, {measuredOf(A.digest)}; B: {B.digest.nSteps} steps,{" "}
            {measuredOf(B.digest)}), as captured: server fingerprints, exact sketch histograms, or raw top-k estimates (those miss the attention outside
            the top-k). The sink mass row is the server's own measurement.
            {!sameVersion && (
              <b data-testid="compare-version-mismatch">
                {" "}
                A is {digestVersionLabel(A.digest)} and B is {digestVersionLabel(B.digest)}: their masses measure different things, so part of the
                difference is the definition, not the attention.
              </b>
            )}
          </p>
        </section>
        <section>
          <h3>Metrics</h3>
          <table className="diff-table" data-testid="compare-metrics">
            <thead>
              <tr><th>metric</th><th>A</th><th>B</th><th>B − A</th></tr>
            </thead>
            <tbody>
              {metricsOf(A.digest, B.digest).map((m) => {
                const d = (m.b - m.a) / m.max;
                return (
                  <tr key={m.key}>
                    <td>{m.label}</td>
                    <td>
                      <span className="mbar a" style={{ width: `${(m.a / m.max) * 80}px` }} /> {m.fmt(m.a)}
                    </td>
                    <td>
                      <span className="mbar b" style={{ width: `${(m.b / m.max) * 80}px` }} /> {m.fmt(m.b)}
                    </td>
                    <td>
                      <span className="dbar-track">
                        <span className={`dbar ${d >= 0 ? "up" : "down"}`} style={{ width: `${Math.min(50, Math.abs(d) * 50)}px`, marginLeft: d >= 0 ? "50px" : `${50 - Math.min(50, Math.abs(d) * 50)}px` }} />
                      </span>{" "}
                      {d >= 0 ? "+" : "−"}
                      {m.fmt(Math.abs(m.b - m.a))}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </section>
        <section>
          <h3>Distance histograms</h3>
          <div className="legend small">
            <span className="legend-item"><i className="sw-a" /> A: {A.name}</span>
            <span className="legend-item"><i className="sw-b" /> B: {B.name}</span>
          </div>
          <Overlay a={A.digest.mean.slice(4)} b={B.digest.mean.slice(4)} />
        </section>
        <section className="wide">
          <h3>PCA reading of the difference (mean B − mean A)</h3>
          <table className="diff-table" data-testid="compare-pca">
            <thead>
              <tr><th>component</th><th>name</th><th>z</th><th>B leans towards</th></tr>
            </thead>
            <tbody>
              {pcs.map((p) => (
                <tr key={p.pc}>
                  <td>PC{p.pc}</td>
                  <td>{p.name}</td>
                  <td>{p.z.toFixed(2)}</td>
                  <td>
                    {p.strength} {p.phrase}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="muted small" data-testid="compare-pca-source" data-pca={pca ? "sidecar" : `shipped-v${version}`}>
            z = (mean B − mean A) · loadings / √(explained variance); |z| ≥ 1.5 strong, ≥ 0.5 moderate. Loadings:{" "}
            {pca ? "the sidecar's discovery run" : `the shipped v${version} PCA (${version === 2 ? "fitted on sink-aware fingerprints" : "fitted on v1 fingerprints"})`}.
          </p>
        </section>
      </div>
    );
  })();
  return (
    <div className="compare" data-testid="compare">
      <div className="toolbar">
        {pick(ia, setA, "A")}
        {pick(ib, setB, "B")}
      </div>
      {body}
    </div>
  );
}
