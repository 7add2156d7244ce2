// The Manifold's canvas: one PointCloud renderer, drag to pan, wheel to zoom, click to pick a
// point, and the labels of clusters and saved sessions drawn over the points.
import { type ReactNode, type RefObject, useEffect, useEffectEvent, useRef } from "react";
import { KIND, type ManifoldSet } from "../manifold/build";
import { PointCloud } from "../manifold/PointCloud";

interface Props {
  set: ManifoldSet | null;
  /** Holds the renderer while the canvas is mounted (Fit, measurements). */
  cloudRef: RefObject<PointCloud | null>;
  /** A click (not a drag) on the canvas: the picked point's index, -1 for none. */
  onPick: (index: number) => void;
  /** Drawn over the canvas (the empty-scope message). */
  children?: ReactNode;
}

export function ManifoldCanvas({ set, cloudRef, onPick, children }: Props) {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const picked = useEffectEvent((index: number) => onPick(index));

  // renderer + pointer handling, once per canvas
  useEffect(() => {
    const c = canvasRef.current;
    if (!c) return;
    const pc = new PointCloud(c);
    cloudRef.current = pc;
    pc.resize();
    const ro = new ResizeObserver(() => pc.resize());
    ro.observe(c);
    let drag: { x: number; y: number; moved: boolean } | null = null;
    const down = (e: PointerEvent) => {
      drag = { x: e.clientX, y: e.clientY, moved: false };
      c.setPointerCapture(e.pointerId);
    };
    const move = (e: PointerEvent) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.moved) pc.pan(dx, dy);
    };
    const up = (e: PointerEvent) => {
      const wasClick = drag && !drag.moved;
      drag = null;
      if (!wasClick) return;
      const r = c.getBoundingClientRect();
      const i = pc.pick(e.clientX - r.left, e.clientY - r.top);
      pc.highlight = i;
      pc.schedule();
      picked(i);
    };
    const wheel = (e: WheelEvent) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      pc.zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
    };
    c.addEventListener("pointerdown", down);
    c.addEventListener("pointermove", move);
    c.addEventListener("pointerup", up);
    c.addEventListener("wheel", wheel, { passive: false });
    return () => {
      ro.disconnect();
      pc.destroy();
      cloudRef.current = null;
      c.removeEventListener("pointerdown", down);
      c.removeEventListener("pointermove", move);
      c.removeEventListener("pointerup", up);
      c.removeEventListener("wheel", wheel);
    };
  }, [cloudRef]);

  useEffect(() => {
    const pc = cloudRef.current;
    if (!pc || !set) return;
    pc.setData(set.data);
    // cluster labels at the centroids
    pc.overlay = (ctx, toScreen) => {
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#1d2330";
      for (let i = 0; i < set.data.n; i++) {
        if (set.kind[i] !== KIND.centroid && set.kind[i] !== KIND.session) continue;
        const [x, y] = toScreen(set.data.x[i], set.data.y[i]);
        const label = set.kind[i] === KIND.centroid ? `cluster ${set.cluster[i]}` : set.owners[set.ownerIdx[i]].label.slice(0, 24);
        ctx.fillText(label, x + 8, y - 6);
      }
    };
  }, [set, cloudRef]);

  return (
    <div className="canvas-wrap">
      <canvas ref={canvasRef} className="manifold-canvas" data-testid="manifold-canvas" />
      {children}
    </div>
  );
}
