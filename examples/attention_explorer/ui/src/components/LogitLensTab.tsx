// Logit lens tab of the Token Lens: for an output token, what each layer's residual stream
// predicts (top tokens with probabilities, through the final norm and unembedding), with the
// produced token highlighted and the first layer where it appears marked; below, the next-token
// alternatives the sampler saw (OpenAI top_logprobs).
import type { Run, TraceSession } from "../trace/session";

const pct = (x: number) => (x >= 0.0995 ? `${(x * 100).toFixed(0)}%` : x >= 0.001 ? `${(x * 100).toFixed(1)}%` : `${(x * 100).toExponential(0)}%`);
const show = (t: string) => JSON.stringify(t).slice(1, -1) || "∅";

export function LogitLensTab({ session, run, pos }: { session: TraceSession; run: Run; pos: number }) {
  const t = session.tokenAt(run, pos);
  if (!t || t.kind !== "output") return <p className="muted">The logit lens reads decode steps: pick an output token.</p>;
  const step = t.token.step;
  const lens = [...(run.lens.get(step) ?? [])].sort((a, b) => a.layer_id - b.layer_id);
  const lp = run.logprobs[step];
  const produced = t.token.id;
  const firstTop = lens.find((e) => e.top_tokens.some((x) => x.id === produced))?.layer_id ?? null;
  return (
    <div className="logit-lens" data-testid="logit-lens">
      {lens.length ? (
        <>
          <p className="muted small">
            Each row reads the residual stream after that layer at the query that produced <code>{show(t.token.text)}</code> through the model's final norm and
            unembedding. The last layer is the model's own next-token distribution (before temperature). The produced token is highlighted;{" "}
            {firstTop !== null ? (
              <>
                it first enters a top-{lens[0].top_tokens.length} at <b data-testid="lens-first-layer">layer {firstTop}</b>.
              </>
            ) : (
              <>it is in no layer's top-{lens[0].top_tokens.length}.</>
            )}
          </p>
          <table className="lens-table" data-testid="lens-table">
            <thead>
              <tr>
                <th>layer</th>
                <th title="probability and rank of the produced token in this layer's reading">produced</th>
                <th>top tokens</th>
              </tr>
            </thead>
            <tbody>
              {lens.map((e) => (
                <tr key={e.layer_id} data-layer={e.layer_id} className={e.layer_id === firstTop ? "first" : ""}>
                  <td className="num">{e.layer_id}</td>
                  <td className="num" title={e.token ? `rank ${e.token.rank}` : ""}>
                    {e.token ? `${pct(e.token.prob)} #${e.token.rank}` : "—"}
                  </td>
                  <td>
                    {e.top_tokens.map((x) => (
                      <span key={x.id} className={`chip lens-chip ${x.id === produced ? "produced" : ""}`} title={`id ${x.id}: ${(x.prob * 100).toFixed(2)}%`}>
                        {show(x.text)} <small>{pct(x.prob)}</small>
                      </span>
                    ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : (
        <p className="muted" data-testid="lens-empty">
          No logit lens for this token. Turn on <b>logit lens</b> in Settings → Capture for the next run (it needs capture on).
        </p>
      )}
      <h4>Next-token alternatives</h4>
      {lp?.top_logprobs?.length ? (
        <table className="links-table" data-testid="alternatives">
          <thead>
            <tr>
              <th>token</th>
              <th>p</th>
              <th>logprob</th>
            </tr>
          </thead>
          <tbody>
            {lp.top_logprobs.map((a, i) => (
              <tr key={i} className={a.token === lp.token ? "produced" : ""}>
                <td>
                  <code>{show(a.token)}</code>
                  {a.token === lp.token && <span className="badge">sampled</span>}
                </td>
                <td className="num">
                  <span className="meter" style={{ width: `${Math.min(100, Math.exp(a.logprob) * 100)}%` }} />
                  {pct(Math.exp(a.logprob))}
                </td>
                <td className="num">{a.logprob.toFixed(3)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : lp ? (
        <p className="muted small">
          Sampled <code>{show(lp.token)}</code> with p {pct(Math.exp(lp.logprob))}; no alternatives were asked for.
        </p>
      ) : (
        <p className="muted small" data-testid="alternatives-empty">
          No logprobs for this token. Set <b>next-token alternatives</b> in Settings → Capture (OpenAI <code>top_logprobs</code>) for the next run.
        </p>
      )}
    </div>
  );
}
