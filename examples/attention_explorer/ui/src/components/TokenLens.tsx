// Token Lens: a drawer on the right for the hovered or pinned token.
// Links: top-k per layer with true probability exp(logit - lse) and renormalized score.
// Signal: fingerprint metrics, distance histogram, zone with confidence.
// MoE: experts and weights, or why there are none.
import { useState } from "react";
import type { Capabilities } from "../api/wire";
import { linksOf, massCaptured } from "../trace/attention";
import { captureFor } from "../trace/links";
import type { Run, TraceSession } from "../trace/session";
import { classify, traits, ZONE_DESCRIPTIONS, type Zone } from "../zones/zones";
import type { Focus, ViewOptions } from "./focus";
import { HeadGrid } from "./HeadGrid";
import { HistogramChart } from "./HistogramChart";
import { LogitLensTab } from "./LogitLensTab";
import { sinkMassOf } from "../trace/attention";

type Tab = "links" | "signal" | "heads" | "lens" | "moe";
const TAB_LABEL: Record<Tab, string> = { links: "Links", signal: "Signal", heads: "Heads", lens: "Logit lens", moe: "MoE" };

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

interface Props {
  session: TraceSession;
  focus: Focus | null;
  pinned: boolean;
  opts: ViewOptions;
  caps: Capabilities | null;
  onClose: () => void;
  onJump: (f: Focus) => void;
  /** Focus a layer and head (head grid); head null = the head mean. */
  onFocusHead?: (layer: number, head: number | null) => void;
}

export function TokenLens({ session, focus, pinned, opts, caps, onClose, onJump, onFocusHead }: Props) {
  const [tab, setTab] = useState<Tab>("links");
  const run = focus ? session.runs.get(focus.runId) : undefined;
  const open = !!(focus && run);
  return (
    <aside className={`lens ${open ? "open" : ""}`} aria-label="Token Lens" data-testid="token-lens">
      {!open && (
        <div className="lens-placeholder muted small">
          <b>Token Lens</b>
          <p>Hover a token, or focus the tokens with Tab and move with the arrow keys; Enter pins, Escape closes.</p>
        </div>
      )}
      {open && run && focus && (
        <>
          <header className="lens-head">
            <div>
              <div className="lens-title">
                Token <TokenLabel session={session} run={run} pos={focus.position} /> {pinned && <span className="badge">pinned</span>}
              </div>
              <div className="muted small">{describe(session, run, focus.position)}</div>
            </div>
            <button className="icon-btn" onClick={onClose} aria-label="close lens" title="Close (unpin)">
              ×
            </button>
          </header>
          <nav className="tabs" role="tablist">
            {(["links", "signal", "heads", "lens", "moe"] as Tab[]).map((t) => (
              <button key={t} role="tab" aria-selected={tab === t} className={tab === t ? "tab active" : "tab"} onClick={() => setTab(t)} data-tab={t}>
                {TAB_LABEL[t]}
              </button>
            ))}
          </nav>
          <div className="lens-body" role="tabpanel" data-panel={tab}>
            {tab === "links" && <LinksTab session={session} run={run} pos={focus.position} opts={opts} onJump={onJump} />}
            {tab === "signal" && <SignalTab session={session} run={run} pos={focus.position} opts={opts} />}
            {tab === "heads" && (
              <HeadGrid session={session} run={run} pos={focus.position} focus={{ layer: opts.layer, head: opts.head ?? null }} onFocusHead={(l, h) => onFocusHead?.(l, h)} />
            )}
            {tab === "lens" && <LogitLensTab session={session} run={run} pos={focus.position} />}
            {tab === "moe" && <MoeTab run={run} pos={focus.position} caps={caps} />}
          </div>
        </>
      )}
    </aside>
  );
}

function TokenLabel({ session, run, pos }: { session: TraceSession; run: Run; pos: number }) {
  const t = session.tokenAt(run, pos);
  if (!t) return <code>#{pos}</code>;
  if (t.kind === "prompt" && t.token.masked) return <code className="masked">▒▒ (masked)</code>;
  return <code>{JSON.stringify(t.token.text)}</code>;
}

function describe(session: TraceSession, run: Run, pos: number): string {
  const t = session.tokenAt(run, pos);
  if (!t) return `position ${pos}`;
  if (t.kind === "prompt") return `prompt token at position ${pos}`;
  const phase = t.token.thinkPhase ? ` · ${t.token.thinkPhase}` : "";
  return `output step ${t.token.step} at position ${pos}${phase}`;
}

function LinksTab({ session, run, pos, opts, onJump }: { session: TraceSession; run: Run; pos: number; opts: ViewOptions; onJump: (f: Focus) => void }) {
  const sc = captureFor(run, pos);
  if (!sc) {
    const pl = run.promptLen ?? 0;
    return (
      <p className="muted">
        {pos < pl
          ? "No attention was captured for this prompt token (turn on “include prompt attention” to capture prompt queries)."
          : "No attention was captured for this token."}
      </p>
    );
  }
  if (sc.fingerprint && !sc.raw.length && !sc.sketch) {
    return <p className="muted">Fingerprint mode sends a 20-number summary per step, not individual links. See the Signal tab, or switch the capture mode to raw for links.</p>;
  }
  const note =
    sc.step !== null ? `Attention of the forward pass that produced this token (query at position ${sc.queryPosition}).` : `Attention of the prompt query at position ${sc.queryPosition}.`;
  const head = opts.head ?? null;
  const shown = head === null ? sc.raw : sc.raw.map((m) => sc.heads.find((h) => h.layer_id === m.layer_id && h.head_id === head) ?? m);
  const fromHeads = sc.heads.length > 0;
  return (
    <div>
      <p className="muted small">{note} True p = exp(logit − lse) is the share of all attention; score is renormalized over the top-k{opts.excludeSinks ? " after dropping sinks" : ""}.</p>
      {fromHeads && (
        <p className="muted small" data-testid="links-head-note">
          {head === null
            ? "Per-head capture: these rows are the mean of the heads' top-k (a position outside a head's top-k counts 0 for it, so true p is a lower bound). Pick one head in the Heads tab."
            : `Head ${head} of each layer (from the Heads tab).`}
        </p>
      )}
      {shown.map((e) => {
        const sinks = session.sinks(run, e.layer_id);
        const links = linksOf(e, sinks, opts.excludeSinks);
        return (
          <section key={e.layer_id} className="layer-block" data-layer={e.layer_id}>
            <h4>
              Layer {e.layer_id}
              {typeof e.head_id === "number" ? ` · head ${e.head_id}` : ""}{" "}
              <span className="muted small">
                captured mass {pct(massCaptured(e))}
                {typeof e.sink_mass === "number" ? ` · sink mass ${pct(e.sink_mass)}` : ""}
                {e.masked_mass ? ` · masked ${pct(e.masked_mass)}` : ""}
              </span>
            </h4>
            <table className="links-table">
              <thead>
                <tr>
                  <th>pos</th>
                  <th>token</th>
                  <th title="exp(logit − logsumexp)">true p</th>
                  <th title={opts.excludeSinks ? "renormalized without sinks" : "renormalized over top-k"}>score</th>
                </tr>
              </thead>
              <tbody>
                {links.map((l) => (
                  <tr key={l.position} className={l.isSink ? "sink-row" : ""} onClick={() => onJump({ runId: run.id, position: l.position })}>
                    <td>{l.position}</td>
                    <td>
                      <TokenLabel session={session} run={run} pos={l.position} />
                      {l.isSink && <span className="badge sink-badge">sink</span>}
                    </td>
                    <td className="num">
                      <span className="meter" style={{ width: `${Math.min(100, l.trueProb * 100)}%` }} />
                      {pct(l.trueProb)}
                    </td>
                    <td className="num">{pct(l.shown)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
        );
      })}
      {sc.sketch &&
        Object.entries(sc.sketch.layer_sketches).map(([layer, sk]) => (
          <section key={layer} className="layer-block" data-layer={layer}>
            <h4>
              Layer {layer} <span className="muted small">sketch hubs · captured mass {pct(sk.mass_captured)}</span>
            </h4>
            <table className="links-table">
              <thead>
                <tr>
                  <th>pos</th>
                  <th>token</th>
                  <th>true p</th>
                </tr>
              </thead>
              <tbody>
                {sk.top_hubs.map(([p, prob]) => (
                  <tr key={p} onClick={() => onJump({ runId: run.id, position: p })}>
                    <td>{p}</td>
                    <td>
                      <TokenLabel session={session} run={run} pos={p} />
                    </td>
                    <td className="num">{pct(prob)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
        ))}
    </div>
  );
}

function SignalTab({ session, run, pos, opts }: { session: TraceSession; run: Run; pos: number; opts: ViewOptions }) {
  const pl = run.promptLen ?? 0;
  if (pos < pl) return <p className="muted">Signals are computed per decode step; pick an output token.</p>;
  const step = pos - pl;
  const sig = session.stepSignal(run, step, opts.excludeSinks);
  const sink = sinkMassOf(run.steps.get(step));
  if (!sig) return <p className="muted">No capture for this step.</p>;
  const fp = sig.fingerprint;
  const sc = run.steps.get(step)!;
  // every reading is classified with the definition its fingerprint follows (StepSignal.version):
  // the server's version, or the dashboard's own sink-aware reading of v2 sketches and raw entries
  const readAs = sig.version;
  const z = classify(fp, readAs);
  const zone: Zone = sc.fingerprint ? (sc.fingerprint.manifold as Zone) : z.zone;
  const conf = sc.fingerprint ? sc.fingerprint.manifold_confidence : z.confidence;
  const excl = opts.excludeSinks ? "; “exclude sinks” is on, so the heuristic sink positions are dropped too and the rest renormalized" : "";
  const sourceNote =
    sig.source === "server"
      ? readAs === 2
        ? "Fingerprint v2 computed by the server over all keys, sink-aware: local/mid/long and the histogram are over the non-sink keys, renormalized; the sink's share is the separate sink mass. Zone read with the v2 thresholds."
        : "Fingerprint (v1) computed by the server over all keys; the sink (position 0) counts in local/mid/long like any key. Zone read with the v1 thresholds."
      : sig.source === "sketch"
        ? readAs === 2
          ? "Sink-aware (v2) reading of the per-layer sketches: in each layer the sink's sink_mass is taken out of the histogram bin at distance = query position (position 0; the dashboard assumes the default of one sink position, since entries do not carry the request's attention_sink_tokens), the rest renormalized to sum 1, then averaged over layers. The entropy is the sketch's, over all keys with the sink included. Zone read with the v2 thresholds."
          : "From the per-layer sketches (exact histogram over all keys, sink included, averaged over layers; v1). Zone read with the v1 thresholds."
        : readAs === 2
          ? `Estimated from the top-k links only (raw mode), sink-aware (v2): position 0 left out (the default one sink position assumed), the rest renormalized; attention outside the top-k is not counted${excl}. Zone read with the v2 thresholds.`
          : `Estimated from the top-k links only (raw mode, v1): attention outside the top-k is not counted${
              opts.excludeSinks ? "; “exclude sinks” is on, so the sink positions are dropped and the rest renormalized" : "; the sink positions are included"
            }. Zone read with the v1 thresholds.`;
  return (
    <div className="signal" data-zone={zone}>
      <div className={`zone-card zone-${zone}`}>
        <div className="zone-name">{zone.replace("_", " ")}</div>
        <div className="zone-conf">
          confidence {pct(conf)}
          <span className="meter conf" style={{ width: `${conf * 100}%` }} />
        </div>
        <div className="small">{ZONE_DESCRIPTIONS[zone] ?? ""}</div>
      </div>
      <table className="metrics-table">
        <tbody>
          <tr><td>local mass (d &lt; 8)</td><td className="num">{pct(fp[0])}</td></tr>
          <tr><td>mid mass (8 ≤ d &lt; 256)</td><td className="num">{pct(fp[1])}</td></tr>
          <tr><td>long mass (d ≥ 256)</td><td className="num">{pct(fp[2])}</td></tr>
          <tr><td>entropy (normalized)</td><td className="num">{fp[3].toFixed(3)}</td></tr>
          {sink !== null && (
            <tr data-testid="signal-sink-mass">
              <td title="exact attention on the first attention_sink_tokens positions (server's sink_mass), mean over the captured layers">sink mass (sink positions; default the first token)</td>
              <td className="num">{pct(sink.mass)}</td>
            </tr>
          )}
          {sig.entropy !== null && <tr><td>entropy (nats, mean of layers)</td><td className="num">{sig.entropy.toFixed(3)}</td></tr>}
          {sig.massCaptured !== null && <tr><td>mass in top-k</td><td className="num">{pct(sig.massCaptured)}</td></tr>}
          <tr><td>traits</td><td>{traits(fp, readAs).join(", ") || "—"}</td></tr>
        </tbody>
      </table>
      <h4>Distance histogram</h4>
      <HistogramChart hist={sig.hist} />
      <p className="muted small" data-testid="signal-source-note" data-version={readAs}>
        {sourceNote}
      </p>
    </div>
  );
}

function MoeTab({ run, pos, caps }: { run: Run; pos: number; caps: Capabilities | null }) {
  const sc = captureFor(run, pos);
  const moe = sc?.moe;
  if (!moe || !Object.keys(moe).length) {
    const anyMoe = [...run.steps.values()].some((s) => s.moe);
    return (
      <div className="muted">
        {anyMoe ? (
          <p>No expert routing was recorded for this token.</p>
        ) : (
          <>
            <p>
              This model is dense: every token goes through the same feed-forward block, so there is no expert routing to show.
            </p>
            <p className="small">
              Mixture-of-experts models (for example Qwen3-MoE) send each token to a few of many expert blocks; for them this tab lists the
              chosen experts and their weights per layer.{caps?.features?.moe_routing === false ? " This server reports no MoE routing support." : ""}
            </p>
          </>
        )}
      </div>
    );
  }
  return (
    <div>
      {Object.entries(moe).map(([layer, r]) => (
        <section key={layer} className="layer-block" data-layer={layer}>
          <h4>Layer {layer}</h4>
          <table className="links-table">
            <thead>
              <tr><th>expert</th><th>weight</th></tr>
            </thead>
            <tbody>
              {r.experts.map((x, i) => (
                <tr key={x}>
                  <td>#{x}</td>
                  <td className="num">
                    <span className="meter" style={{ width: `${(r.weights[i] ?? 0) * 100}%` }} />
                    {pct(r.weights[i] ?? 0)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </div>
  );
}
