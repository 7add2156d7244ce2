// Links of a token in any capture mode, for the chat view, the lens and inspect.
import type { Run, TraceSession } from "./session";
import { linksOf, type Link } from "./attention";

/** The capture that describes a token: decode step for output tokens, prompt query for prompt tokens. */
export function captureFor(run: Run, position: number) {
  const pl = run.promptLen ?? run.promptTokens.length;
  if (position >= pl) return run.steps.get(position - pl);
  return run.promptSteps.get(position);
}

export function layerFor(run: Run, layer: number | null): number | null {
  if (layer !== null && run.layers.includes(layer)) return layer;
  return run.layers.length ? run.layers[run.layers.length - 1] : null;
}

/** Links from the token at `position` in `layer` (raw top-k, or sketch hubs), sinks handled. */
export function tokenLinks(s: TraceSession, run: Run, position: number, layer: number | null, excludeSinks: boolean, head: number | null = null): Link[] {
  const sc = captureFor(run, position);
  const l = layerFor(run, layer);
  if (!sc || l === null) return [];
  const sinks = s.sinks(run, l);
  const headEntry = head === null ? undefined : sc.heads.find((r) => r.layer_id === l && r.head_id === head);
  const raw = headEntry ?? sc.raw.find((r) => r.layer_id === l);
  if (raw) return linksOf(raw, sinks, excludeSinks);
  const sk = sc.sketch?.layer_sketches[String(l)];
  if (sk) {
    // Sketch hubs carry true probabilities; scores are those renormalized over the hubs.
    const totAll = sk.top_hubs.reduce((a, [, prob]) => a + prob, 0) || 1;
    const all = sk.top_hubs.map(([p, prob]) => ({ position: p, trueProb: prob, score: prob / totAll, shown: prob / totAll, isSink: sinks.has(p) }));
    if (!excludeSinks) return all;
    const kept = all.filter((x) => !x.isSink);
    const tot = kept.reduce((a, x) => a + x.score, 0);
    return kept.map((x) => ({ ...x, shown: tot ? x.score / tot : 0 }));
  }
  return [];
}
