// Overhead HUD: what the latest run cost on the wire and how fast it came.
import { runStatusLabel, type TraceSession } from "../trace/session";

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

export function Hud({ session }: { session: TraceSession }) {
  const run = session.latestRun();
  if (!run) return <div className="hud muted">no run yet</div>;
  const s = session.rates(run);
  const m = run.metrics;
  return (
    <div className="hud" data-testid="hud">
      <span title="output tokens">
        <b data-hud="tokens">{s.tokenCount}</b> tok
      </span>
      <span title="tokens per second after the first token">
        <b data-hud="tps">{s.tokensPerSec === null ? "–" : s.tokensPerSec.toFixed(1)}</b> tok/s
      </span>
      <span title="attention capture bytes received (of all bytes received)">
        <b data-hud="attn-bytes">{bytes(m.attentionBytes)}</b> attn / {bytes(m.bytesReceived)}
      </span>
      <span title="capture mode of this run">
        mode <b data-hud="mode">{run.entries.length || run.status === "streaming" ? run.capture.mode : "none"}</b>
      </span>
      {m.firstRenderMs !== null && (
        <span title="first SSE byte to first token on screen">
          first token <b data-hud="first-render">{m.firstRenderMs.toFixed(0)} ms</b>
        </span>
      )}
      <span className={`status-${runStatusLabel(run)}`} data-hud="status" title={runStatusLabel(run) === "truncated" ? "stopped at max_tokens (finish_reason length)" : undefined}>
        {runStatusLabel(run)}
      </span>
    </div>
  );
}
