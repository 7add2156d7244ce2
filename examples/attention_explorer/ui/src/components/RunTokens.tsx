// The tokens of one run (prompt strip + output), tinted by attention, with link curves
// from the focused token to what it attended to. Tokens are memoized spans with
// primitive props and one delegated event handler, so streaming 1,000+ tokens only
// renders what changed.
import { memo, useLayoutEffect, useMemo, useRef, useState } from "react";
import type { Run, TraceSession } from "../trace/session";
import { layerFor, tokenLinks } from "../trace/links";
import type { Focus, ViewOptions } from "./focus";
import { LinkOverlay } from "./LinkOverlay";
import { SegmentTimeline } from "./SegmentTimeline";

const LEVELS = 8;
/** Pointer position of the last hover change, shared by all runs' token boxes. */
const lastPointer = { x: NaN, y: NaN };

interface TokenProps {
  pos: number;
  text: string;
  level: number;
  cls: string;
  title: string;
}

/** Show whitespace-only tokens visibly, keep others as they are. */
function visible(text: string): string {
  if (text === "\n") return "↵\n";
  if (text === "") return "∅";
  return text;
}

/**
 * Split a segment's tokens into blocks that end at a newline (or at a sentence end past BLOCK_MAX tokens).
 * Each block is its own line layout, so appending a token re-lays out only the last block
 * instead of the whole answer: without this, layout grows with the answer and long streams
 * drop frames. Blocks that scroll out of view also skip rendering (content-visibility).
 */
const BLOCK_MAX = 160;
function toBlocks<T extends { text: string }>(toks: T[]): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  for (const t of toks) {
    cur.push(t);
    // Past BLOCK_MAX, break at the next sentence end so the forced line break reads naturally.
    const long = cur.length >= BLOCK_MAX && (/[.!?;:]["')\]]?\s*$/.test(t.text) || cur.length >= 2 * BLOCK_MAX);
    if (t.text.includes("\n") || long) {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

/** The sampled token's probability and the alternatives (top_logprobs), for the token's tooltip. */
function altText(lp: Run["logprobs"][number]): string {
  if (!lp) return "";
  const pc = (l: number) => `${(Math.exp(l) * 100).toFixed(1)}%`;
  const alts = (lp.top_logprobs ?? []).filter((a) => a.token !== lp.token).map((a) => `${JSON.stringify(a.token)} ${pc(a.logprob)}`);
  return `\np ${pc(lp.logprob)}${alts.length ? `; alternatives: ${alts.join(", ")}` : ""}`;
}

const TokenSpan = memo(function TokenSpan({ pos, text, level, cls, title }: TokenProps) {
  return (
    <span className={`tok ${cls} lv${level}`} data-pos={pos} title={title}>
      {visible(text)}
    </span>
  );
});

interface Props {
  session: TraceSession;
  run: Run;
  version: number;
  hover: Focus | null;
  pinned: Focus | null;
  opts: ViewOptions;
  onHover: (f: Focus | null) => void;
  onPin: (f: Focus | null) => void;
}

export function RunTokens({ session, run, version, hover, pinned, opts, onHover, onPin }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  const [promptOpen, setPromptOpen] = useState<boolean | null>(null);
  const showPrompt = promptOpen ?? run.promptTokens.length <= 160;

  const focus = pinned?.runId === run.id ? pinned : hover?.runId === run.id ? hover : null;
  const layer = layerFor(run, opts.layer);
  const sinks = useMemo(() => (layer === null ? new Set<number>([0]) : session.sinks(run, layer)), [session, run, layer, version]);
  const links = useMemo(
    () => (focus ? tokenLinks(session, run, focus.position, opts.layer, opts.excludeSinks, opts.head ?? null) : []),
    [session, run, focus?.position, opts.layer, opts.excludeSinks, opts.head, version],
  );

  // Tint: with a focused token, by how much it attends to each token; otherwise by how much
  // attention each token received over all steps (sinks left out so they do not wash out the rest).
  const levels = useMemo(() => {
    const m = new Map<number, number>();
    if (focus) {
      const max = Math.max(1e-9, ...links.map((l) => l.shown));
      for (const l of links) m.set(l.position, Math.max(1, Math.ceil((l.shown / max) * LEVELS)));
      return m;
    }
    const rec = layer === null ? undefined : run.received.get(layer);
    if (!rec) return m;
    let max = 1e-9;
    for (const [p, v] of rec) if (!sinks.has(p)) max = Math.max(max, v);
    // Snap the scale up to a power of 1.25: levels of old tokens then stay put while the
    // maximum creeps up, so each new token restyles and repaints only what really changed.
    max = Math.pow(1.25, Math.ceil(Math.log(max) / Math.log(1.25)));
    for (const [p, v] of rec) if (!sinks.has(p)) m.set(p, Math.round((v / max) * (LEVELS - 3)));
    return m;
  }, [focus, links, run, layer, sinks, version]);

  // First token on screen: record first SSE byte -> painted token (after this commit's paint).
  useLayoutEffect(() => {
    if (run.metrics.firstRenderMs !== null || run.clock.firstByte === null) return;
    if (!run.tokens.some(Boolean)) return;
    const fb = run.clock.firstByte;
    setTimeout(() => {
      if (run.metrics.firstRenderMs === null) run.metrics.firstRenderMs = performance.now() - fb;
    }, 0);
  });

  const handleOver = (e: React.MouseEvent) => {
    const el = (e.target as HTMLElement).closest("[data-pos]") as HTMLElement | null;
    if (!el) return;
    // When the lens slides in, the text re-wraps under a still pointer and the browser sends
    // a mouseover for whatever token is now there. Only a pointer that moved changes the hover.
    if (lastPointer.x === e.clientX && lastPointer.y === e.clientY) return;
    lastPointer.x = e.clientX;
    lastPointer.y = e.clientY;
    const pos = Number(el.dataset.pos);
    if (!hover || hover.runId !== run.id || hover.position !== pos) onHover({ runId: run.id, position: pos });
  };
  const handleClick = (e: React.MouseEvent) => {
    const el = (e.target as HTMLElement).closest("[data-pos]") as HTMLElement | null;
    if (!el) return;
    const pos = Number(el.dataset.pos);
    onPin(pinned && pinned.runId === run.id && pinned.position === pos ? null : { runId: run.id, position: pos });
  };

  // Keyboard: Tab focuses the token box; arrows move the lens token (Up/Down by a line), Home/End
  // jump, Enter or Space pins (again: unpins). Escape (App) closes the lens.
  const handleKey = (e: React.KeyboardEvent) => {
    const boxEl = box.current;
    if (!boxEl || e.target !== boxEl) return;
    const els = [...boxEl.querySelectorAll<HTMLElement>(".tok[data-pos]")];
    if (!els.length) return;
    const cur = focus ? els.findIndex((x) => Number(x.dataset.pos) === focus.position) : -1;
    let next = -1;
    if (e.key === "ArrowRight") next = cur < 0 ? 0 : Math.min(els.length - 1, cur + 1);
    else if (e.key === "ArrowLeft") next = cur < 0 ? els.length - 1 : Math.max(0, cur - 1);
    else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      // the nearest token on the next (previous) line, by horizontal distance
      if (cur < 0) next = e.key === "ArrowDown" ? 0 : els.length - 1;
      else {
        const r0 = els[cur].getBoundingClientRect();
        const down = e.key === "ArrowDown";
        let best = -1;
        let bestScore = Infinity;
        for (let i = down ? cur + 1 : cur - 1; down ? i < els.length : i >= 0; down ? i++ : i--) {
          const r = els[i].getBoundingClientRect();
          const dy = down ? r.top - r0.top : r0.top - r.top;
          if (dy < 4) continue;
          const score = dy * 1000 + Math.abs(r.left - r0.left);
          if (score < bestScore) {
            bestScore = score;
            best = i;
          } else if (best >= 0 && dy * 1000 > bestScore) break;
        }
        next = best >= 0 ? best : down ? Math.min(els.length - 1, cur + 1) : Math.max(0, cur - 1);
      }
    } else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = els.length - 1;
    else if ((e.key === "Enter" || e.key === " ") && focus) {
      e.preventDefault();
      onPin(pinned && pinned.runId === run.id && pinned.position === focus.position ? null : { runId: run.id, position: focus.position });
      return;
    } else return;
    e.preventDefault();
    const el = els[next];
    el.scrollIntoView?.({ block: "nearest" });
    const pos = Number(el.dataset.pos);
    // a pinned token moves with the keys; otherwise the hover does
    if (pinned && pinned.runId === run.id) onPin({ runId: run.id, position: pos });
    else onHover({ runId: run.id, position: pos });
  };

  const linkSet = new Set(links.map((l) => l.position));
  const clsOf = (pos: number, extra: string) => {
    let c = extra;
    if (sinks.has(pos)) c += " sink";
    if (focus && focus.position === pos) c += " focus";
    if (pinned && pinned.runId === run.id && pinned.position === pos) c += " pinned";
    if (linkSet.has(pos)) c += " linked";
    return c;
  };

  const pl = run.promptLen ?? run.promptTokens.length;
  const segments = run.segments;
  const toggle = (id: string) =>
    setCollapsed((c) => {
      const n = new Set(c);
      if (n.has(id)) n.delete(id);
      else n.add(id);
      return n;
    });

  return (
    <div
      className="run-tokens"
      ref={box}
      onMouseOver={handleOver}
      onClick={handleClick}
      onKeyDown={handleKey}
      tabIndex={0}
      role="group"
      aria-label="tokens: arrow keys move the Token Lens, Enter pins, Escape closes"
      aria-keyshortcuts="ArrowLeft ArrowRight ArrowUp ArrowDown Home End Enter Escape"
      data-run={run.id}
      data-focus-pos={focus ? focus.position : undefined}
    >
      {run.promptTokens.length > 0 && (
        <div className="prompt-strip">
          <button className="link-btn" onClick={(e) => (e.stopPropagation(), setPromptOpen(!showPrompt))}>
            {showPrompt ? "▾" : "▸"} Prompt tokens ({run.promptTokens.length}
            {run.promptTokens.some((t) => t?.masked) ? `, ${run.promptTokens.filter((t) => t?.masked).length} masked` : ""})
          </button>
          {showPrompt && (
            <div className="tokens prompt">
              {run.promptTokens.map((t) =>
                t ? (
                  <TokenSpan
                    key={t.position}
                    pos={t.position}
                    text={t.masked ? "▒▒" : t.text}
                    level={levels.get(t.position) ?? 0}
                    cls={clsOf(t.position, t.masked ? "p masked" : "p")}
                    title={t.masked ? `position ${t.position}: masked by the privacy setting` : `position ${t.position}, token id ${t.id}`}
                  />
                ) : null,
              )}
            </div>
          )}
        </div>
      )}
      {segments.length > 1 || segments.some((s) => s.type === "assistant_think") ? (
        <SegmentTimeline run={run} collapsed={collapsed} onToggle={toggle} />
      ) : null}
      <div className="tokens output">
        {segments.map((seg) => {
          const toks = run.tokens.slice(seg.startStep, seg.endStep + 1).filter((t) => t && t.segmentId === seg.id);
          const body = toBlocks(toks).map((blk) => (
            <div className="tblock" key={blk[0].step}>
              {blk.map((t) => (
                <TokenSpan
                  key={t.step}
                  pos={pl + t.step}
                  text={t.text}
                  level={levels.get(pl + t.step) ?? 0}
                  cls={clsOf(pl + t.step, t.thinkPhase === "think" ? "o think" : "o")}
                  title={`step ${t.step}, position ${pl + t.step}${t.id !== null ? `, token id ${t.id}` : ""}${altText(run.logprobs[t.step])}`}
                />
              ))}
            </div>
          ));
          if (seg.type !== "assistant_think") return <span key={seg.id}>{body}</span>;
          const isCollapsed = collapsed.has(seg.id);
          return (
            <div key={seg.id} className={`think-block ${isCollapsed ? "collapsed" : ""}`} data-segment={seg.id}>
              <button className="think-head" onClick={(e) => (e.stopPropagation(), toggle(seg.id))}>
                {isCollapsed ? "▸" : "▾"} Thinking · {toks.length} tokens
              </button>
              {!isCollapsed && <div className="think-body">{body}</div>}
            </div>
          );
        })}
        {run.status === "streaming" && <span className="caret" aria-hidden />}
      </div>
      {focus && <LinkOverlay container={box} from={focus.position} links={links} version={version} />}
    </div>
  );
}
