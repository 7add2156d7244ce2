// SVG curves from the focused token to each token it attends to. Drawn over the run's
// token box; targets that are not on screen (collapsed think block, hidden prompt) are
// simply not drawn (the lens still lists them).
import { useEffect, useLayoutEffect, useState, type RefObject } from "react";
import type { Link } from "../trace/attention";

interface Path {
  d: string;
  width: number;
  opacity: number;
  sink: boolean;
  to: number;
}

export function LinkOverlay({ container, from, links, version }: { container: RefObject<HTMLDivElement | null>; from: number; links: Link[]; version: number }) {
  const [paths, setPaths] = useState<Path[]>([]);
  const [size, setSize] = useState({ w: 0, h: 0 });
  // Token positions move when the box is resized (the lens sliding in narrows the chat): redraw then.
  const [resizeTick, setResizeTick] = useState(0);
  useEffect(() => {
    const box = container.current;
    if (!box || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => setResizeTick((t) => t + 1));
    ro.observe(box);
    return () => ro.disconnect();
  }, [container]);
  useLayoutEffect(() => {
    const box = container.current;
    if (!box) return;
    const base = box.getBoundingClientRect();
    const src = box.querySelector(`[data-pos="${from}"]`) as HTMLElement | null;
    if (!src) {
      setPaths([]);
      return;
    }
    const s = src.getBoundingClientRect();
    const sx = s.left + s.width / 2 - base.left;
    const sy = s.top - base.top + 2;
    const out: Path[] = [];
    for (const l of links) {
      if (l.position === from) continue;
      const el = box.querySelector(`[data-pos="${l.position}"]`) as HTMLElement | null;
      if (!el) continue;
      const r = el.getBoundingClientRect();
      const tx = r.left + r.width / 2 - base.left;
      const ty = r.top - base.top + 2;
      // Arc above both ends, higher for farther targets.
      const lift = Math.min(90, 18 + Math.abs(tx - sx) * 0.15 + Math.abs(ty - sy) * 0.3);
      const cy = Math.min(sy, ty) - lift;
      out.push({
        d: `M ${sx} ${sy} C ${sx} ${cy}, ${tx} ${cy}, ${tx} ${ty}`,
        width: 1 + 4 * l.shown,
        opacity: 0.25 + 0.75 * Math.min(1, l.shown * 2),
        sink: l.isSink,
        to: l.position,
      });
    }
    setPaths(out);
    setSize({ w: box.scrollWidth, h: box.scrollHeight });
  }, [container, from, links, version, resizeTick]);
  return (
    <svg className="link-overlay" width={size.w} height={size.h} aria-label="attention links" data-link-count={paths.length}>
      {paths.map((p) => (
        <path key={p.to} d={p.d} strokeWidth={p.width} strokeOpacity={p.opacity} className={p.sink ? "link sink" : "link"} data-to={p.to} />
      ))}
    </svg>
  );
}
