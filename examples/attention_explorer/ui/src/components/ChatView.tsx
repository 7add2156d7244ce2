// Chat: the conversation with live attention. Assistant messages render their run's
// tokens (RunTokens); the composer sends, stops and regenerates.
import { useEffect, useRef, useState } from "react";
import { runStatusLabel, type TraceSession } from "../trace/session";
import { layerFor } from "../trace/links";
import type { Focus, ViewOptions } from "./focus";
import { RunTokens } from "./RunTokens";

interface Props {
  session: TraceSession;
  version: number;
  hover: Focus | null;
  pinned: Focus | null;
  opts: ViewOptions;
  setOpts: (o: ViewOptions) => void;
  onHover: (f: Focus | null) => void;
  onPin: (f: Focus | null) => void;
  busy: boolean;
  canSend: boolean;
  readOnly: boolean;
  onSend: (text: string) => void;
  onStop: () => void;
  onRegenerate: () => void;
}

export function ChatView(p: Props) {
  const { session, version } = p;
  const [text, setText] = useState("");
  const end = useRef<HTMLDivElement>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const latest = session.latestRun();

  // Follow the stream while the user is at the bottom; do not yank them back if they scrolled up.
  // "At the bottom" is read in the scroll handler, so the per-token effect forces no extra layout.
  const atBottom = useRef(true);
  useEffect(() => {
    if (atBottom.current) end.current?.scrollIntoView({ block: "end" });
  }, [version]);
  const onScroll = () => {
    const el = scroller.current;
    if (el) atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 160;
  };

  const send = () => {
    const t = text.trim();
    if (!t || p.busy || !p.canSend) return;
    p.onSend(t);
    setText("");
  };
  const visible = session.messages.filter((m) => !m.superseded);
  const layer = latest ? layerFor(latest, p.opts.layer) : null;
  const sinks = latest && layer !== null ? [...session.sinks(latest, layer)].sort((a, b) => a - b) : [];
  const lastIsAssistant = visible.length > 0 && visible[visible.length - 1].role === "assistant";

  return (
    <div className="chat">
      <div className="toolbar">
        <label>
          Layer{" "}
          <select
            value={layer ?? ""}
            onChange={(e) => p.setOpts({ ...p.opts, layer: e.target.value === "" ? null : Number(e.target.value) })}
            aria-label="chat layer"
            disabled={!latest?.layers.length}
          >
            {!latest?.layers.length && <option value="">–</option>}
            {latest?.layers.map((l) => (
              <option key={l} value={l}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label className="check">
          <input type="checkbox" checked={p.opts.excludeSinks} onChange={(e) => p.setOpts({ ...p.opts, excludeSinks: e.target.checked })} aria-label="exclude sinks" /> exclude sinks
          (renormalize)
        </label>
        {latest && sinks.length > 0 && (
          <span className="sinks" data-testid="sinks">
            sinks:{" "}
            {sinks.map((pos) => {
              const t = session.tokenAt(latest, pos);
              const label = !t ? `#${pos}` : t.kind === "prompt" && t.token.masked ? "▒▒" : JSON.stringify(t.token.text);
              return (
                <span key={pos} className="chip sink" title={`position ${pos}`}>
                  {label}
                </span>
              );
            })}
          </span>
        )}
        <TintLegend focused={!!(p.pinned ?? p.hover)} excludeSinks={p.opts.excludeSinks} head={p.opts.head ?? null} />
        <span className="muted small">hover a token to see its links · click to pin · Tab, arrows, Enter, Esc</span>
      </div>
      <div className="messages" ref={scroller} onScroll={onScroll} onMouseLeave={() => p.onHover(null)}>
        {visible.length === 0 && (
          <div className="empty">
            <h2>Chat with your model and watch what it attends to</h2>
            <p>Each token is tinted by attention. Hover one to draw its links to the tokens it attended to; click to pin it in the Token Lens.</p>
          </div>
        )}
        {visible.map((m) => {
          const run = m.runId ? session.runs.get(m.runId) : undefined;
          return (
            <div key={m.id} className={`msg msg-${m.role}`} data-role={m.role}>
              <div className="msg-role">
                {m.role}
                {run && (
                  <span className="muted small">
                    {" "}
                    · {run.model} · {run.entries.length || run.status === "streaming" ? `${run.capture.mode} top-${run.capture.topK}${run.heads.length ? " per head" : ""}` : "no attention captured"} ·{" "}
                    <span className={`run-status status-${runStatusLabel(run)}`} data-testid="run-status" title={runStatusLabel(run) === "truncated" ? "the reply hit max_tokens (finish_reason \"length\")" : undefined}>
                      {runStatusLabel(run)}
                    </span>
                  </span>
                )}
              </div>
              {run && (run.tokens.length > 0 || run.promptTokens.length > 0) ? (
                <RunTokens session={session} run={run} version={version} hover={p.hover} pinned={p.pinned} opts={p.opts} onHover={p.onHover} onPin={p.onPin} />
              ) : (
                <div className="msg-text">{m.content || (run?.status === "streaming" ? <span className="caret" /> : null)}</div>
              )}
              {run?.error && (
                <div className="error" role="alert">
                  {run.error}
                </div>
              )}
            </div>
          );
        })}
        <div ref={end} />
      </div>
      {!p.readOnly ? (
        <div className="composer">
          <textarea
            value={text}
            onChange={(e) => setText(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey) {
                e.preventDefault();
                send();
              }
            }}
            placeholder={p.canSend ? "Ask something… (Enter to send, Shift+Enter for a new line)" : "Server not connected"}
            aria-label="message"
            rows={2}
          />
          <div className="composer-actions">
            {p.busy ? (
              <button className="btn danger" onClick={p.onStop}>
                Stop
              </button>
            ) : (
              <button className="btn primary" onClick={send} disabled={!p.canSend || !text.trim()}>
                Send
              </button>
            )}
            <button className="btn" onClick={p.onRegenerate} disabled={p.busy || !p.canSend || !lastIsAssistant}>
              Regenerate
            </button>
          </div>
        </div>
      ) : (
        <div className="composer muted">Imported trace (read-only replay). Switch to the live session to chat.</div>
      )}
    </div>
  );
}

/** What the token tint means right now: received attention (no token focused) or the focused token's links. */
function TintLegend({ focused, excludeSinks, head }: { focused: boolean; excludeSinks: boolean; head: number | null }) {
  const text = focused
    ? `tint: how much the focused token attends to each token (its top-k${head !== null ? `, head ${head}` : ""}${excludeSinks ? ", sinks dropped, renormalized" : ""})`
    : "tint: attention each token received, summed over the run's steps (sinks left out of the scale)";
  return (
    <span className="tint-legend small" data-testid="tint-legend" title={text}>
      <span className="muted">{focused ? "attends" : "received"}</span> low
      {[1, 2, 3, 4, 5, 6, 7, 8].map((l) => (
        <i key={l} className={`tok lv${l}`} />
      ))}
      high <span className="tok sink legend-sink">sink</span>
      <span className="sr-only">{text}</span>
    </span>
  );
}
