// SVG curves from the focused token to each token it attends to, drawn over the run's token box.
// A target inside a scrolled box (the prompt strip scrolls on its own) is drawn to where it is
// on screen when visible; when it is scrolled out of view the curve ends, dashed, at that box's
// top or bottom edge (data-offscreen), so no curve points at blank space or at another token.
// The curves are redrawn when any box inside scrolls or the box is resized. Targets that are not
// rendered at all (collapsed think block, hidden prompt) are not drawn (the lens still lists them).
import { useEffect, useLayoutEffect, useState, type RefObject } from "react";
import type { Link } from "../trace/attention";

interface Path {
  d: string;
  width: number;
  opacity: number;
  sink: boolean;
  to: number;
  offscreen: "" | "above" | "below";
}

export interface Rect {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

/**
 * Where a curve ends for a target rect, given the visible rects of the scroll boxes that hold it
 * (innermost first): the target's top centre when visible, else the nearest edge of the box that
 * hides it. Pure, so it can be tested without a layout engine.
 */
export function anchorFor(target: Rect, clips: Rect[]): { x: number; y: number; offscreen: "" | "above" | "below" } {
  const x = (target.left + target.right) / 2;
  let y = target.top + 2;
  for (const c of clips) {
    if (target.bottom <= c.top + 1) return { x: Math.min(Math.max(x, c.left), c.right), y: c.top, offscreen: "above" };
    if (target.top >= c.bottom - 1) return { x: Math.min(Math.max(x, c.left), c.right), y: c.bottom, offscreen: "below" };
    // partly scrolled out at the top: end on the part that shows
    y = Math.max(y, c.top);
  }
  return { x, y, offscreen: "" };
}

/** Scroll boxes between el and box (exclusive), innermost first. */
function scrollClips(el: HTMLElement, box: HTMLElement): Rect[] {
  const out: Rect[] = [];
  for (let n = el.parentElement; n && n !== box; n = n.parentElement) {
    if (n.scrollHeight > n.clientHeight + 1) {
      const ov = getComputedStyle(n).overflowY;
      if (ov === "auto" || ov === "scroll" || ov === "hidden") out.push(n.getBoundingClientRect());
    }
  }
  return out;
}

export function LinkOverlay({ container, from, links, version }: { container: RefObject<HTMLDivElement | null>; from: number; links: Link[]; version: number }) {
  const [paths, setPaths] = useState<Path[]>([]);
  const [size, setSize] = useState({ w: 0, h: 0 });
  // Token positions move when the box is resized (the window, a collapsed block) or an inner box scrolls: redraw then.
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const box = container.current;
    if (!box) return;
    let raf = 0;
    const bump = () => {
      if (raf) return;
      raf = requestAnimationFrame(() => {
        raf = 0;
        setTick((t) => t + 1);
      });
    };
    // scroll does not bubble: listen in the capture phase for any scroller inside the box
    box.addEventListener("scroll", bump, true);
    const ro = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(bump);
    ro?.observe(box);
    return () => {
      box.removeEventListener("scroll", bump, true);
      ro?.disconnect();
      if (raf) cancelAnimationFrame(raf);
    };
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
    const s = anchorFor(src.getBoundingClientRect(), scrollClips(src, box));
    const sx = s.x - base.left;
    const sy = s.y - base.top;
    const out: Path[] = [];
    for (const l of links) {
      if (l.position === from) continue;
      const el = box.querySelector(`[data-pos="${l.position}"]`) as HTMLElement | null;
      if (!el) continue;
      const a = anchorFor(el.getBoundingClientRect(), scrollClips(el, box));
      const tx = a.x - base.left;
      const ty = a.y - base.top;
      // Arc above both ends, higher for farther targets.
      const lift = Math.min(90, 18 + Math.abs(tx - sx) * 0.15 + Math.abs(ty - sy) * 0.3);
      const cy = Math.min(sy, ty) - lift;
      out.push({
        d: `M ${sx} ${sy} C ${sx} ${cy}, ${tx} ${cy}, ${tx} ${ty}`,
        width: 1 + 4 * l.shown,
        opacity: 0.25 + 0.75 * Math.min(1, l.shown * 2),
        sink: l.isSink,
        to: l.position,
        offscreen: a.offscreen,
      });
    }
    setPaths(out);
    setSize({ w: box.scrollWidth, h: box.scrollHeight });
  }, [container, from, links, version, tick]);
  return (
    <svg className="link-overlay" width={size.w} height={size.h} aria-label="attention links" data-link-count={paths.length} data-tick={tick}>
      {paths.map((p) => (
        <path
          key={p.to}
          d={p.d}
          strokeWidth={p.width}
          strokeOpacity={p.opacity}
          className={`link${p.sink ? " sink" : ""}${p.offscreen ? " offscreen" : ""}`}
          data-to={p.to}
          data-offscreen={p.offscreen || undefined}
        />
      ))}
    </svg>
  );
}
