// A 2-D point cloud on one <canvas>: points are written straight into an ImageData buffer
// (one 32-bit store per pixel), so 100k points redraw in a few milliseconds without a GPU
// and without one DOM node per point. Pan by dragging, zoom with the wheel, pick the nearest
// point to a click. The React view owns the data; this class owns pixels and the transform.

/** Palette index -> RGB. 0..4 follow ZONES order; 5 = noise/unknown; FADED + i = a light tint of i. */
const BASE: [number, number, number][] = [
  [47, 158, 68], // syntax_floor
  [59, 91, 219], // semantic_bridge
  [201, 42, 42], // long_range
  [174, 62, 201], // structure_ripple
  [240, 140, 0], // diffuse
  [150, 155, 165], // noise / unknown
];
export const NOISE = 5;
/** Offset of the faded tints (background points: the discovery run's training points). */
export const FADED = BASE.length;
const tint = ([r, g, b]: [number, number, number]): [number, number, number] => [r, g, b].map((c) => Math.round(c + (255 - c) * 0.6)) as [number, number, number];
export const PALETTE: [number, number, number][] = [...BASE, ...BASE.map(tint)];
const BG = [255, 255, 255];

export interface CloudData {
  n: number;
  x: Float32Array;
  y: Float32Array;
  /** Palette index per point. */
  color: Uint8Array;
  /** Half-width in CSS pixels (1 -> a 3x3 square). */
  size: Uint8Array;
}

export class PointCloud {
  private ctx: CanvasRenderingContext2D;
  private data: CloudData | null = null;
  private img: ImageData | null = null;
  private buf: Uint32Array | null = null;
  private colors32 = new Uint32Array(PALETTE.length);
  private bg32 = 0;
  private dpr = 1;
  /** Data-space centre and pixels per data unit (CSS pixels). */
  cx = 0;
  cy = 0;
  scale = 1;
  highlight = -1;
  overlay: ((ctx: CanvasRenderingContext2D, toScreen: (x: number, y: number) => [number, number]) => void) | null = null;
  /** lastDrawn: points inside the canvas at the last draw. */
  stats = { lastDrawMs: 0, draws: 0, drawMs: [] as number[], lastDrawn: 0 };
  private raf = 0;

  constructor(private canvas: HTMLCanvasElement) {
    const ctx = canvas.getContext("2d");
    if (!ctx) throw new Error("canvas 2D is not available");
    this.ctx = ctx;
    // ImageData is RGBA in memory; a Uint32 view reads it in the platform's byte order.
    const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
    const pack = ([r, g, b]: number[]) => (little ? (255 << 24) | (b << 16) | (g << 8) | r : (r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
    PALETTE.forEach((c, i) => (this.colors32[i] = pack(c)));
    this.bg32 = pack(BG);
  }

  get width(): number {
    return this.canvas.clientWidth;
  }
  get height(): number {
    return this.canvas.clientHeight;
  }

  resize(): void {
    this.dpr = Math.min(window.devicePixelRatio || 1, 2);
    const w = Math.max(1, Math.round(this.width * this.dpr));
    const h = Math.max(1, Math.round(this.height * this.dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.img = this.ctx.createImageData(w, h);
    this.buf = new Uint32Array(this.img.data.buffer);
    this.schedule();
  }

  setData(d: CloudData, keepView = false): void {
    this.data = d;
    this.highlight = -1;
    if (!keepView) this.fit();
    this.schedule();
  }

  /** Frame every point with a margin. */
  fit(): void {
    const d = this.data;
    if (!d || !d.n) {
      this.cx = 0;
      this.cy = 0;
      this.scale = 100;
      return;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < d.n; i++) {
      const x = d.x[i], y = d.y[i];
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    this.cx = (x0 + x1) / 2;
    this.cy = (y0 + y1) / 2;
    const span = Math.max(x1 - x0, y1 - y0, 1e-6);
    this.scale = (0.85 * Math.min(this.width || 600, this.height || 400)) / span;
  }

  toScreen = (x: number, y: number): [number, number] => [
    (x - this.cx) * this.scale + this.width / 2,
    this.height / 2 - (y - this.cy) * this.scale,
  ];

  pan(dx: number, dy: number): void {
    this.cx -= dx / this.scale;
    this.cy += dy / this.scale;
    this.schedule();
  }

  zoomAt(sx: number, sy: number, factor: number): void {
    // keep the data point under the cursor fixed
    const dx = (sx - this.width / 2) / this.scale + this.cx;
    const dy = (this.height / 2 - sy) / this.scale + this.cy;
    this.scale = Math.min(Math.max(this.scale * factor, 1e-3), 1e7);
    this.cx = dx - (sx - this.width / 2) / this.scale;
    this.cy = dy - (this.height / 2 - sy) / this.scale;
    this.schedule();
  }

  /** Nearest point within maxDist CSS pixels of (sx, sy), or -1. */
  pick(sx: number, sy: number, maxDist = 8): number {
    const d = this.data;
    if (!d) return -1;
    let best = -1;
    let bestD = maxDist * maxDist;
    const hw = this.width / 2, hh = this.height / 2;
    for (let i = 0; i < d.n; i++) {
      const px = (d.x[i] - this.cx) * this.scale + hw - sx;
      const py = hh - (d.y[i] - this.cy) * this.scale - sy;
      const dd = px * px + py * py;
      // ties go to the later (drawn on top, larger) point
      if (dd <= bestD) {
        bestD = dd;
        best = i;
      }
    }
    return best;
  }

  schedule(): void {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.draw();
    });
  }

  /** Redraw now; returns the milliseconds it took. */
  draw(): number {
    const t0 = performance.now();
    if (!this.img || !this.buf) this.resize();
    const img = this.img!;
    const buf = this.buf!;
    const W = img.width, H = img.height;
    buf.fill(this.bg32);
    const d = this.data;
    if (d) {
      const s = this.scale * this.dpr;
      const ox = W / 2 - this.cx * s;
      const oy = H / 2 + this.cy * s;
      const r0 = Math.max(1, Math.round(this.dpr));
      const xs = d.x, ys = d.y, cs = d.color, ss = d.size, cols = this.colors32;
      let drawn = 0;
      for (let i = 0; i < d.n; i++) {
        const px = (xs[i] * s + ox) | 0;
        const py = (oy - ys[i] * s) | 0;
        const r = ss[i] * r0;
        if (px < -r || py < -r || px >= W + r || py >= H + r) continue;
        drawn++;
        const c = cols[cs[i]];
        const xa = px - r < 0 ? 0 : px - r;
        const xb = px + r >= W ? W - 1 : px + r;
        const ya = py - r < 0 ? 0 : py - r;
        const yb = py + r >= H ? H - 1 : py + r;
        for (let y = ya; y <= yb; y++) {
          const row = y * W;
          for (let x = xa; x <= xb; x++) buf[row + x] = c;
        }
      }
      this.stats.lastDrawn = drawn;
    }
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.putImageData(img, 0, 0);
    this.ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (d && this.highlight >= 0 && this.highlight < d.n) {
      const [hx, hy] = this.toScreen(d.x[this.highlight], d.y[this.highlight]);
      this.ctx.strokeStyle = "#1d2330";
      this.ctx.lineWidth = 2;
      this.ctx.beginPath();
      this.ctx.arc(hx, hy, 9, 0, Math.PI * 2);
      this.ctx.stroke();
    }
    this.overlay?.(this.ctx, this.toScreen);
    const ms = performance.now() - t0;
    this.stats.lastDrawMs = ms;
    this.stats.draws += 1;
    if (this.stats.drawMs.length < 5000) this.stats.drawMs.push(ms);
    return ms;
  }

  destroy(): void {
    if (this.raf) cancelAnimationFrame(this.raf);
    this.raf = 0;
  }
}
