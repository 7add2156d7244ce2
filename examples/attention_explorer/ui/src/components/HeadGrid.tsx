// Head grid: for one token, layers x heads small multiples from per-head capture (bertviz's
// model view, CircuitsVis's head thumbnails). Each cell draws where that head's top-k attention
// goes over the positions 0..query (bar height = true probability) and names its strongest key.
// Clicking a cell focuses that layer and head in the chat arcs and the Links tab.
import type { RawEntry } from "../api/wire";
import { trueProbs } from "../trace/attention";
import { captureFor } from "../trace/links";
import type { Run, TraceSession } from "../trace/session";

const W = 30;
const H = 22;

interface Props {
  session: TraceSession;
  run: Run;
  pos: number;
  /** Focused layer/head (null: none). */
  focus: { layer: number | null; head: number | null };
  onFocusHead: (layer: number, head: number | null) => void;
}

function label(session: TraceSession, run: Run, p: number): string {
  const t = session.tokenAt(run, p);
  if (!t) return `#${p}`;
  if (t.kind === "prompt" && t.token.masked) return "▒▒";
  return JSON.stringify(t.token.text);
}

function Cell({ e, session, run, active, onClick }: { e: RawEntry; session: TraceSession; run: Run; active: boolean; onClick: () => void }) {
  const tp = trueProbs(e);
  const q = Math.max(1, e.query_position);
  const best = tp.indexOf(Math.max(...tp));
  const top = e.token_positions[best];
  const mass = tp.reduce((a, b) => a + b, 0);
  const title =
    `layer ${e.layer_id}, head ${e.head_id}: strongest key ${top} ${label(session, run, top)} (true p ${(tp[best] * 100).toFixed(1)}%), ` +
    `top-${tp.length} mass ${(mass * 100).toFixed(1)}%${typeof e.sink_mass === "number" ? `, sink mass ${(e.sink_mass * 100).toFixed(1)}%` : ""}`;
  return (
    <button
      className={`head-cell ${active ? "active" : ""}`}
      onClick={onClick}
      title={title}
      aria-label={title}
      aria-pressed={active}
      data-layer={e.layer_id}
      data-head={e.head_id}
      data-top={top}
    >
      <svg width={W} height={H} aria-hidden>
        <line x1={0} x2={W} y1={H - 0.5} y2={H - 0.5} className="axis-line" />
        {e.token_positions.map((p, i) => {
          const x = (p / q) * (W - 3);
          const h = Math.max(1, tp[i] * (H - 2));
          return <rect key={p} x={x} y={H - h} width={3} height={h} className={p === 0 ? "bar sink" : "bar"} />;
        })}
      </svg>
      <span className="head-cap">→{top}</span>
    </button>
  );
}

export function HeadGrid({ session, run, pos, focus, onFocusHead }: Props) {
  const sc = captureFor(run, pos);
  if (!run.heads.length) {
    return (
      <p className="muted" data-testid="head-grid-empty">
        This run has no per-head capture. Turn on <b>per-head capture</b> in Settings → Capture (raw mode) for the next run: each layer then sends
        one top-k per query head instead of their mean.
      </p>
    );
  }
  if (!sc || !sc.heads.length) return <p className="muted">No per-head capture for this token (prompt tokens need “include prompt attention”).</p>;
  const layers = [...new Set(sc.heads.map((h) => h.layer_id))].sort((a, b) => a - b);
  return (
    <div className="head-grid" data-testid="head-grid" data-layers={layers.length} data-heads={run.heads.length}>
      <p className="muted small">
        Each cell is one query head: bars at the key positions 0 … {sc.queryPosition} of its top-{sc.heads[0].token_positions.length}, height = true
        probability (the sink, position 0, in orange; hover a cell for its strongest key and sink mass). Click a head to draw its links in the chat and list them in Links; click again for the head mean.
      </p>
      <table>
        <thead>
          <tr>
            <th />
            {run.heads.map((h) => (
              <th key={h} className="small muted">
                h{h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {layers.map((l) => (
            <tr key={l} data-layer-row={l}>
              <th className="small muted">L{l}</th>
              {run.heads.map((h) => {
                const e = sc.heads.find((x) => x.layer_id === l && x.head_id === h);
                const active = focus.head === h && focus.layer === l;
                return <td key={h}>{e && <Cell e={e} session={session} run={run} active={active} onClick={() => onFocusHead(l, active ? null : h)} />}</td>;
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
