// Attention map: the query x key heatmap of one layer and head (or the mean of the heads) for a
// whole run, from the server's dense replay (POST /v1/attention/replay, float16 .npy). The matrix
// is painted once into an offscreen T x T bitmap; zoom (wheel) and pan (drag) only redraw that
// bitmap scaled (drawImage), so 2,048 x 2,048 stays smooth. Token labels appear on the axes once
// a cell is large enough to hold them. Click a cell: the query is pinned (chat, Token Lens) and
// the key's attenders ("who attends to this token") are listed.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { attendersOf, fetchReplay, keysOf, type ReplayMatrix } from "../api/replay";
import type { Capabilities } from "../api/wire";
import type { Run, TraceSession } from "../trace/session";
import type { Focus } from "./focus";

type Scale = "sqrt" | "linear" | "row";
const LEFT = 96;
const TOP = 64;

export interface MapSequence {
  ids: number[];
  labels: string[];
  /** Why the run cannot be replayed (masked or unknown token ids), or null. */
  problem: string | null;
  /** Tokens left out past the server's replay limit. */
  cut: number;
}

/** Prompt + output token ids of a run, as the replay needs them. */
export function sequenceOf(run: Run, limit = 2048): MapSequence {
  const ids: number[] = [];
  const labels: string[] = [];
  const pl = run.promptLen ?? run.promptTokens.length;
  for (let p = 0; p < pl; p++) {
    const t = run.promptTokens[p];
    if (!t || t.id === null || t.masked) {
      return { ids: [], labels: [], cut: 0, problem: "This run's prompt has masked (or missing) tokens: the server never sends their ids, so the run cannot be replayed." };
    }
    ids.push(t.id);
    labels.push(t.text);
  }
  for (const t of run.tokens) {
    if (!t) continue;
    if (t.id === null) return { ids: [], labels: [], cut: 0, problem: "This run has no token ids (it was streamed without capture), so it cannot be replayed." };
    ids.push(t.id);
    labels.push(t.text);
  }
  if (!ids.length) return { ids, labels, cut: 0, problem: "This run has no tokens yet." };
  const cut = Math.max(0, ids.length - limit);
  return { ids: ids.slice(0, limit), labels: labels.slice(0, limit), cut, problem: null };
}

/** RGBA bitmap of a T x T matrix (white = 0, dark blue = max; upper triangle grey). */
export function paintMatrix(m: Float32Array, T: number, scale: Scale): ImageData | Uint8ClampedArray {
  const px = new Uint8ClampedArray(T * T * 4);
  // 256-step ramp white -> blue -> navy
  const ramp = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    ramp[i * 3] = 255 - t * (255 - 16);
    ramp[i * 3 + 1] = 255 - t * (255 - 40);
    ramp[i * 3 + 2] = 255 - t * (255 - 120);
  }
  for (let i = 0; i < T; i++) {
    let rowMax = 1;
    if (scale === "row") {
      rowMax = 1e-12;
      for (let j = 0; j <= i; j++) rowMax = Math.max(rowMax, m[i * T + j]);
    }
    for (let j = 0; j < T; j++) {
      const o = (i * T + j) * 4;
      if (j > i) {
        px[o] = 241;
        px[o + 1] = 243;
        px[o + 2] = 245;
        px[o + 3] = 255;
        continue;
      }
      let v = m[i * T + j] / rowMax;
      if (scale !== "linear") v = Math.sqrt(Math.max(0, v));
      const k = Math.max(0, Math.min(255, Math.round(v * 255))) * 3;
      px[o] = ramp[k];
      px[o + 1] = ramp[k + 1];
      px[o + 2] = ramp[k + 2];
      px[o + 3] = 255;
    }
  }
  return typeof ImageData === "undefined" ? px : new ImageData(px, T, T);
}

interface Props {
  session: TraceSession;
  version: number;
  serverUrl: string;
  apiKey: string;
  caps: Capabilities | null;
  pinned: Focus | null;
  onPin: (f: Focus | null) => void;
}

interface View {
  s: number;
  tx: number;
  ty: number;
}

export function AttentionMapView({ session, serverUrl, apiKey, caps, pinned, onPin }: Props) {
  const runs = [...session.runs.values()].filter((r) => r.status !== "streaming");
  const [runId, setRunId] = useState<string | null>(null);
  const run = (runId && session.runs.get(runId)) || runs[runs.length - 1];
  const nLayers = caps?.max_layers ?? (run?.layers.length ? Math.max(...run.layers) + 1 : 1);
  const nHeads = (caps as { num_attention_heads?: number } | null)?.num_attention_heads ?? Math.max(1, run?.heads.length ?? 0);
  const [layer, setLayer] = useState<number | null>(null);
  const L = layer ?? (run?.layers.length ? run.layers[run.layers.length - 1] : nLayers - 1);
  const [head, setHead] = useState<number | "mean">("mean");
  const [scale, setScale] = useState<Scale>("sqrt");
  const limit = (caps as { limits?: { replay_max_tokens?: number } } | null)?.limits?.replay_max_tokens ?? 2048;
  const seq = useMemo(() => (run ? sequenceOf(run, limit) : null), [run, limit, run?.tokens.length]);
  const [mat, setMat] = useState<{ key: string; m: ReplayMatrix; ms: number } | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const cache = useRef(new Map<string, { m: ReplayMatrix; ms: number }>());
  const key = run && seq && !seq.problem ? `${run.id}|${seq.ids.length}|${L}|${head}` : "";

  useEffect(() => {
    if (!key || !seq) return;
    const hit = cache.current.get(key);
    if (hit) {
      setMat({ key, ...hit });
      return;
    }
    const ctrl = new AbortController();
    setLoading(true);
    setErr(null);
    const t0 = performance.now();
    fetchReplay(serverUrl, { inputIds: seq.ids, layer: L, head }, ctrl.signal, apiKey || undefined)
      .then((m) => {
        const v = { m, ms: performance.now() - t0 };
        cache.current.set(key, v);
        setMat({ key, ...v });
      })
      .catch((e) => !ctrl.signal.aborted && setErr((e as Error).message))
      .finally(() => !ctrl.signal.aborted && setLoading(false));
    return () => ctrl.abort();
  }, [key, seq, serverUrl, apiKey, L, head]);

  const T = mat?.m.shape[mat.m.shape.length - 1] ?? 0;
  const data = mat && mat.key === key ? mat.m.data : null;

  // the painted bitmap (offscreen canvas), rebuilt when the matrix or the colour scale changes
  const bitmap = useRef<HTMLCanvasElement | null>(null);
  const [paintMs, setPaintMs] = useState<number | null>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const wrap = useRef<HTMLDivElement>(null);
  const view = useRef<View>({ s: 1, tx: LEFT, ty: TOP });
  const [size, setSize] = useState({ w: 600, h: 400 });
  const [hover, setHover] = useState<{ i: number; j: number } | null>(null);
  const [picked, setSel] = useState<{ i: number; j: number } | null>(null);
  // Without a click on the map, the token pinned elsewhere (chat, lens) is the selection: the row of
  // the query that produced it (position - 1, what the Links tab lists) and its own column (who
  // attends to it).
  const pinPos = pinned && run && pinned.runId === run.id ? pinned.position : null;
  const sel = picked ?? (pinPos !== null && pinPos < T ? { i: Math.max(0, pinPos - 1), j: pinPos } : null);
  // Row i is the query at position i: the forward pass that produced token i + 1, which the chat
  // and the Token Lens show for that row.
  const pinRow = (i: number) => onPin({ runId: run!.id, position: i + 1 < T ? i + 1 : i });
  const frameTimes = useRef<number[]>([]);
  const draws = useRef(0);
  const raf = useRef(0);

  const draw = useCallback(() => {
    raf.current = 0;
    const c = canvas.current;
    const bm = bitmap.current;
    if (!c) return;
    const t0 = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size.w, size.h);
    if (!bm || !data || !seq) return;
    const { s, tx, ty } = view.current;
    ctx.save();
    ctx.beginPath();
    ctx.rect(LEFT, TOP, size.w - LEFT, size.h - TOP);
    ctx.clip();
    ctx.imageSmoothingEnabled = s < 1;
    ctx.drawImage(bm, tx, ty, T * s, T * s);
    // selection crosshair
    if (sel) {
      ctx.strokeStyle = "rgba(201,42,42,0.8)";
      ctx.lineWidth = 1;
      ctx.strokeRect(tx + sel.j * s, ty, Math.max(1, s), T * s);
      ctx.strokeRect(tx, ty + sel.i * s, T * s, Math.max(1, s));
    }
    ctx.restore();
    // axis labels: visible rows / columns once a cell is >= 9 px
    ctx.fillStyle = "#6b7385";
    ctx.font = "10px ui-monospace, monospace";
    const i0 = Math.max(0, Math.floor((TOP - ty) / s));
    const i1 = Math.min(T - 1, Math.floor((size.h - ty) / s));
    const j0 = Math.max(0, Math.floor((LEFT - tx) / s));
    const j1 = Math.min(T - 1, Math.floor((size.w - tx) / s));
    const every = s >= 9 ? 1 : Math.ceil(12 / s);
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = i0 - (i0 % every); i <= i1; i += every) {
      if (i < i0) continue;
      const y = ty + (i + 0.5) * s;
      ctx.fillText(s >= 9 ? `${JSON.stringify(seq.labels[i] ?? "").slice(1, -1).slice(0, 10)} ${i}` : String(i), LEFT - 4, y);
    }
    ctx.save();
    ctx.textAlign = "left";
    for (let j = j0 - (j0 % every); j <= j1; j += every) {
      if (j < j0) continue;
      const x = tx + (j + 0.5) * s;
      ctx.save();
      ctx.translate(x, TOP - 4);
      ctx.rotate(-Math.PI / 3);
      ctx.fillText(s >= 9 ? `${j} ${JSON.stringify(seq.labels[j] ?? "").slice(1, -1).slice(0, 10)}` : String(j), 0, 0);
      ctx.restore();
    }
    ctx.restore();
    draws.current += 1;
    const ft = performance.now() - t0;
    frameTimes.current.push(ft);
    if (frameTimes.current.length > 2000) frameTimes.current.splice(0, 1000);
    c.dataset.draws = String(draws.current);
    c.dataset.lastDrawMs = ft.toFixed(2);
  }, [data, seq, size, T, sel]);
  const request = useCallback(() => {
    if (!raf.current) raf.current = requestAnimationFrame(draw);
  }, [draw]);

  // fit the whole matrix
  const fit = useCallback(() => {
    if (!T) return;
    const s = Math.min((size.w - LEFT - 8) / T, (size.h - TOP - 8) / T);
    view.current = { s, tx: LEFT, ty: TOP };
    request();
  }, [T, size, request]);

  useEffect(() => {
    if (!data || !T) {
      bitmap.current = null;
      return;
    }
    const t0 = performance.now();
    const img = paintMatrix(data, T, scale) as ImageData;
    const off = document.createElement("canvas");
    off.width = T;
    off.height = T;
    off.getContext("2d")?.putImageData(img, 0, 0);
    bitmap.current = off;
    setPaintMs(performance.now() - t0);
    request();
  }, [data, T, scale, request]);
  useEffect(() => fit(), [T, key]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => request(), [request]);

  useEffect(() => {
    const el = wrap.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => setSize({ w: el.clientWidth, h: el.clientHeight }));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.round(size.w * dpr);
    c.height = Math.round(size.h * dpr);
    request();
  }, [size, request]);

  const cellAt = (e: { clientX: number; clientY: number }) => {
    const c = canvas.current!;
    const r = c.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const { s, tx, ty } = view.current;
    const i = Math.floor((y - ty) / s);
    const j = Math.floor((x - tx) / s);
    if (!(x >= LEFT && y >= TOP && i >= 0 && j >= 0 && i < T && j < T)) return null;
    return { i, j };
  };
  const drag = useRef<{ x: number; y: number; moved: boolean } | null>(null);
  const onWheel = (e: React.WheelEvent) => {
    if (!T) return;
    const r = canvas.current!.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const v = view.current;
    const fitS = Math.min((size.w - LEFT - 8) / T, (size.h - TOP - 8) / T);
    const s = Math.min(64, Math.max(fitS * 0.5, v.s * Math.exp(-e.deltaY * 0.0015)));
    view.current = { s, tx: x - ((x - v.tx) * s) / v.s, ty: y - ((y - v.ty) * s) / v.s };
    request();
  };
  useEffect(() => {
    // React's wheel listener is passive: stop the page from scrolling with a native one
    const c = canvas.current;
    if (!c) return;
    const stop = (e: WheelEvent) => e.preventDefault();
    c.addEventListener("wheel", stop, { passive: false });
    return () => c.removeEventListener("wheel", stop);
  }, []);

  if (!run) return <div className="empty" data-testid="attention-map">No finished runs yet: chat first, or import a trace.</div>;
  const labelOf = (p: number) => JSON.stringify(seq?.labels[p] ?? "");
  const attenders = data && sel ? attendersOf(data, T, sel.j, 16) : [];
  const keys = data && sel ? keysOf(data, T, sel.i, 16) : [];
  const pl = run.promptLen ?? 0;
  return (
    <div className="attention-map" data-testid="attention-map">
      <div className="toolbar">
        <label>
          Run{" "}
          <select value={run.id} onChange={(e) => setRunId(e.target.value)} aria-label="map run">
            {runs.map((r, i) => (
              <option key={r.id} value={r.id}>
                #{i + 1} · {(r.promptLen ?? 0) + r.tokens.length} tokens
              </option>
            ))}
          </select>
        </label>
        <label>
          Layer{" "}
          <select value={L} onChange={(e) => setLayer(Number(e.target.value))} aria-label="map layer">
            {Array.from({ length: nLayers }, (_, l) => (
              <option key={l} value={l}>
                {l}
                {run.layers.includes(l) ? " (captured)" : ""}
              </option>
            ))}
          </select>
        </label>
        <label>
          Head{" "}
          <select value={String(head)} onChange={(e) => setHead(e.target.value === "mean" ? "mean" : Number(e.target.value))} aria-label="map head">
            <option value="mean">mean of heads</option>
            {Array.from({ length: nHeads }, (_, h) => (
              <option key={h} value={h}>
                {h}
              </option>
            ))}
          </select>
        </label>
        <label>
          Colour{" "}
          <select value={scale} onChange={(e) => setScale(e.target.value as Scale)} aria-label="map scale">
            <option value="sqrt">√p</option>
            <option value="linear">p</option>
            <option value="row">p / row max</option>
          </select>
        </label>
        <button className="btn" onClick={fit} disabled={!T}>
          Fit
        </button>
        <span className="muted small" data-testid="map-status" data-t={T} data-fetch-ms={mat ? mat.ms.toFixed(0) : ""} data-paint-ms={paintMs?.toFixed(1) ?? ""}>
          {seq?.problem ??
            (loading
              ? `replaying ${seq?.ids.length} tokens…`
              : err
                ? ""
                : T
                  ? `${T} × ${T} · layer ${L} · ${head === "mean" ? "mean of heads" : `head ${head}`} · replay ${mat?.ms.toFixed(0)} ms, paint ${paintMs?.toFixed(0)} ms${seq?.cut ? ` · last ${seq.cut} tokens past the ${limit}-token limit left out` : ""}`
                  : "")}
        </span>
      </div>
      {err && (
        <div className="error small" role="alert" style={{ padding: "4px 14px" }}>
          Replay failed: {err}
        </div>
      )}
      <div className="map-body">
        <div className="map-wrap" ref={wrap}>
          <canvas
            ref={canvas}
            className="map-canvas"
            data-testid="map-canvas"
            style={{ width: size.w, height: size.h }}
            onWheel={onWheel}
            onPointerDown={(e) => {
              drag.current = { x: e.clientX, y: e.clientY, moved: false };
              (e.target as HTMLElement).setPointerCapture?.(e.pointerId);
            }}
            onPointerMove={(e) => {
              const d = drag.current;
              if (d) {
                const dx = e.clientX - d.x;
                const dy = e.clientY - d.y;
                if (Math.abs(dx) + Math.abs(dy) > 2) d.moved = true;
                if (d.moved) {
                  view.current = { ...view.current, tx: view.current.tx + dx, ty: view.current.ty + dy };
                  d.x = e.clientX;
                  d.y = e.clientY;
                  request();
                  return;
                }
              }
              const c = cellAt(e);
              setHover((h) => (c && h && h.i === c.i && h.j === c.j ? h : c));
            }}
            onPointerUp={(e) => {
              const d = drag.current;
              drag.current = null;
              if (d?.moved) return;
              const c = cellAt(e);
              if (!c) return;
              setSel(c);
              pinRow(c.i);
            }}
            onPointerLeave={() => setHover(null)}
          />
          {!T && !seq?.problem && !err && <div className="overlay-empty muted" style={{ padding: 24 }}>{loading ? "Replaying…" : ""}</div>}
        </div>
        <aside className="details map-details" data-testid="map-details">
          <div className="small" data-testid="map-hover">
            {hover && data
              ? `query ${hover.i} ${labelOf(hover.i)} → key ${hover.j} ${labelOf(hover.j)}: p ${(data[hover.i * T + hover.j] * 100).toFixed(2)}%`
              : "Hover a cell: query row → key column. Wheel to zoom, drag to pan; click to pick."}
          </div>
          <p className="muted small">
            Exact softmax(q·kᵀ) of the whole sequence from the server's dense replay (float16), prompt tokens 0–{pl - 1}, output from {pl}. Rows are queries, columns
            are keys; each row sums to 1. Row i is the query that produced token i + 1: clicking it pins that token in the chat and the Token Lens, whose
            Links tab lists the same row from the capture.
          </p>
          {sel && data && (
            <>
              <h4>Who attends to key {sel.j} {labelOf(sel.j)}</h4>
              <table className="links-table" data-testid="map-attenders">
                <tbody>
                  {attenders.map((a) => (
                    <tr key={a.query} onClick={() => (setSel({ i: a.query, j: sel.j }), pinRow(a.query))}>
                      <td className="num">{a.query}</td>
                      <td>
                        <code>{labelOf(a.query)}</code>
                      </td>
                      <td className="num">{(a.p * 100).toFixed(1)}%</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <h4>
                Query {sel.i} {labelOf(sel.i)} attends to{sel.i + 1 < T ? ` (it produced ${sel.i + 1} ${labelOf(sel.i + 1)})` : ""}
              </h4>
              <table className="links-table" data-testid="map-keys">
                <tbody>
                  {keys.map((a) => (
                    <tr key={a.key} onClick={() => setSel({ i: sel.i, j: a.key })}>
                      <td className="num">{a.key}</td>
                      <td>
                        <code>{labelOf(a.key)}</code>
                      </td>
                      <td className="num">{(a.p * 100).toFixed(1)}%</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
          {pinned && pinned.runId === run.id && !sel && <p className="muted small">Pinned: position {pinned.position}.</p>}
        </aside>
      </div>
    </div>
  );
}
