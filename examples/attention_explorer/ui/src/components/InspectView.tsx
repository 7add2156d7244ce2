// Inspect: one row per token of a run with its top-k for the chosen layer. The list is
// virtualized (only visible rows are in the DOM) so it stays smooth at 10k+ tokens.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useMemo, useRef, useState } from "react";
import type { TraceSession } from "../trace/session";
import { layerFor, tokenLinks } from "../trace/links";
import type { Focus, ViewOptions } from "./focus";

type SegFilter = "all" | "generated" | "think" | "output" | "prompt";

interface Props {
  session: TraceSession;
  version: number;
  opts: ViewOptions;
  setOpts: (o: ViewOptions) => void;
  pinned: Focus | null;
  onPin: (f: Focus | null) => void;
}

const ROW = 30;

export function InspectView({ session, version, opts, setOpts, pinned, onPin }: Props) {
  const runs = [...session.runs.values()];
  const [runId, setRunId] = useState<string | null>(null);
  const run = (runId && session.runs.get(runId)) || runs[runs.length - 1];
  // Prompt rows carry links only with prompt attention: without it, start on the generated tokens
  // instead of hundreds of empty prompt rows.
  const [chosen, setFilter] = useState<SegFilter | null>(null);
  const filter: SegFilter = chosen ?? (run && run.promptSteps.size === 0 ? "generated" : "all");
  const scroller = useRef<HTMLDivElement>(null);

  const rows = useMemo(() => {
    if (!run) return [] as { pos: number; text: string; phase: string; masked: boolean }[];
    const pl = run.promptLen ?? run.promptTokens.length;
    const out: { pos: number; text: string; phase: string; masked: boolean }[] = [];
    if (filter === "all" || filter === "prompt") {
      for (const t of run.promptTokens) if (t) out.push({ pos: t.position, text: t.masked ? "▒▒" : t.text, phase: "prompt", masked: t.masked });
    }
    for (const t of run.tokens) {
      if (!t) continue;
      const phase = t.thinkPhase === "think" ? "think" : "output";
      if (filter === "all" || filter === "generated" || filter === phase) out.push({ pos: pl + t.step, text: t.text, phase, masked: false });
    }
    return out;
  }, [run, filter, version]);

  const virt = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => ROW, overscan: 12 });

  if (!run) return <div className="empty">No runs yet: chat first, or import a trace.</div>;
  const layer = layerFor(run, opts.layer);
  return (
    <div className="inspect">
      <div className="toolbar">
        <label>
          Run{" "}
          <select value={run.id} onChange={(e) => setRunId(e.target.value)} aria-label="run">
            {runs.map((r, i) => (
              <option key={r.id} value={r.id}>
                #{i + 1} · {r.capture.mode} · {r.tokens.filter(Boolean).length} tokens
              </option>
            ))}
          </select>
        </label>
        <label>
          Layer{" "}
          <select value={layer ?? ""} onChange={(e) => setOpts({ ...opts, layer: e.target.value === "" ? null : Number(e.target.value) })} aria-label="layer">
            {run.layers.length === 0 && <option value="">(none captured)</option>}
            {run.layers.map((l) => (
              <option key={l} value={l}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label>
          Segment{" "}
          <select value={filter} onChange={(e) => setFilter(e.target.value as SegFilter)} aria-label="segment filter">
            <option value="all">all</option>
            <option value="generated">generated (think + output)</option>
            <option value="prompt">prompt</option>
            <option value="think">think</option>
            <option value="output">output</option>
          </select>
        </label>
        <label className="check">
          <input type="checkbox" checked={opts.excludeSinks} onChange={(e) => setOpts({ ...opts, excludeSinks: e.target.checked })} /> exclude sinks
        </label>
        <span className="muted small" data-testid="inspect-rows">
          {rows.length} rows{filter === "generated" && run.promptTokens.length ? ` (${run.promptTokens.length} prompt rows hidden: no prompt attention captured)` : ""}
        </span>
      </div>
      <div className="inspect-head row">
        <span className="c-pos">pos</span>
        <span className="c-phase">phase</span>
        <span className="c-tok">token</span>
        <span className="c-links">top-k attended (position: score)</span>
      </div>
      <div className="inspect-list" ref={scroller} data-testid="inspect-list">
        <div style={{ height: virt.getTotalSize(), position: "relative" }}>
          {virt.getVirtualItems().map((vi) => {
            const r = rows[vi.index];
            const links = tokenLinks(session, run, r.pos, opts.layer, opts.excludeSinks, opts.head ?? null);
            const isPinned = pinned?.runId === run.id && pinned.position === r.pos;
            return (
              <div
                key={vi.key}
                className={`row ${isPinned ? "pinned" : ""} ph-${r.phase}`}
                style={{ position: "absolute", top: 0, left: 0, right: 0, height: ROW, transform: `translateY(${vi.start}px)` }}
                data-pos={r.pos}
                onClick={() => onPin(isPinned ? null : { runId: run.id, position: r.pos })}
              >
                <span className="c-pos">{r.pos}</span>
                <span className={`c-phase phase-${r.phase}`}>{r.phase}</span>
                <span className={`c-tok ${r.masked ? "masked" : ""}`}>{JSON.stringify(r.text).slice(1, -1)}</span>
                <span className="c-links">
                  {links.slice(0, 8).map((l) => (
                    <span key={l.position} className={`chip ${l.isSink ? "sink" : ""}`} title={`true p ${(l.trueProb * 100).toFixed(2)}%`}>
                      {l.position}: {(l.shown * 100).toFixed(0)}%
                    </span>
                  ))}
                  {links.length > 8 && <span className="muted small">+{links.length - 8}</span>}
                </span>
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
