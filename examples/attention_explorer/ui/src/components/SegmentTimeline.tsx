// A bar showing think vs output stretches of a run, proportional to their token counts.
// Clicking a think stretch collapses or expands it.
import type { Run } from "../trace/session";

export function SegmentTimeline({ run, collapsed, onToggle }: { run: Run; collapsed: Set<string>; onToggle: (id: string) => void }) {
  const total = Math.max(1, run.segments.reduce((a, s) => a + (s.endStep - s.startStep + 1), 0));
  return (
    <div className="timeline" role="list" aria-label="segment timeline">
      {run.segments.map((s) => {
        const n = s.endStep - s.startStep + 1;
        const think = s.type === "assistant_think";
        return (
          <button
            key={s.id}
            role="listitem"
            className={`seg ${think ? "seg-think" : "seg-output"} ${collapsed.has(s.id) ? "seg-collapsed" : ""}`}
            style={{ flexGrow: n }}
            title={`${think ? "think" : "output"}: steps ${s.startStep}–${s.endStep} (${n} tokens)${think ? ", click to collapse/expand" : ""}`}
            onClick={(e) => {
              e.stopPropagation();
              if (think) onToggle(s.id);
            }}
          >
            {n / total > 0.08 ? `${think ? "think" : "output"} ${n}` : ""}
          </button>
        );
      })}
    </div>
  );
}
