// The 16-bin log-distance histogram as an SVG bar chart (bin labels = distance ranges).
const LABELS = ["0-1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1k", "2k", "4k", "8k", "16k", "32k+"];
const BANDS = (i: number) => (i < 3 ? "local" : i < 8 ? "mid" : "long");

export function HistogramChart({ hist, width = 330, height = 120 }: { hist: number[]; width?: number; height?: number }) {
  const max = Math.max(1e-9, ...hist);
  const bw = width / hist.length;
  const h = height - 18;
  return (
    <svg className="hist" width={width} height={height} role="img" aria-label="distance histogram">
      {hist.map((v, i) => {
        const bh = (v / max) * (h - 4);
        return (
          <g key={i}>
            <rect x={i * bw + 1} y={h - bh} width={bw - 2} height={bh} className={`bar ${BANDS(i)}`}>
              <title>{`distance ${LABELS[i]}: ${(v * 100).toFixed(1)}%`}</title>
            </rect>
            {i % 3 === 0 && (
              <text x={i * bw + bw / 2} y={height - 4} textAnchor="middle" className="axis">
                {LABELS[i]}
              </text>
            )}
          </g>
        );
      })}
      <line x1={0} x2={width} y1={h} y2={h} className="axis-line" />
    </svg>
  );
}
