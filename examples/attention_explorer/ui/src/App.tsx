// The dashboard shell: top bar (views, sessions, export/import, connection), settings,
// the active view, the Token Lens drawer and the HUD. Every view reads one TraceSession.
import { useCallback, useEffect, useRef, useState } from "react";
import { ChatView } from "./components/ChatView";
import { type Focus, type ViewOptions } from "./components/focus";
import { Hud } from "./components/Hud";
import { InspectView } from "./components/InspectView";
import { SettingsPanel } from "./components/SettingsPanel";
import { TokenLens } from "./components/TokenLens";
import { startGeneration, type RunHandle } from "./state/chat";
import { useConnection } from "./state/connection";
import { loadSettings, saveSettings, type Settings } from "./state/settings";
import { useSessionVersion } from "./state/useSession";
import { exportTrace, importTrace, TraceImportError } from "./trace/jsonl";
import { TraceSession } from "./trace/session";

type View = "chat" | "inspect";

interface Loaded {
  session: TraceSession;
  label: string;
  live: boolean;
}

declare global {
  interface Window {
    /** Read-only handle for end-to-end tests and measurements. */
    __attentionExplorer?: { session: () => TraceSession; sessions: () => TraceSession[] };
  }
}

export function App() {
  const [loaded, setLoaded] = useState<Loaded[]>(() => [{ session: new TraceSession(), label: "Live session", live: true }]);
  const [active, setActive] = useState(0);
  const cur = loaded[active];
  const session = cur.session;
  const version = useSessionVersion(session);
  const [settings, setSettingsState] = useState<Settings>(loadSettings);
  const conn = useConnection(settings.serverUrl, settings.apiKey);
  const [view, setView] = useState<View>("chat");
  const [showSettings, setShowSettings] = useState(true);
  const [hover, setHoverState] = useState<Focus | null>(null);
  // The lens keeps showing the last hovered token after the pointer leaves, so it can be read.
  const [lastHover, setLastHover] = useState<Focus | null>(null);
  const setHover = useCallback((f: Focus | null) => {
    setHoverState(f);
    if (f) setLastHover(f);
  }, []);
  const [pinned, setPinned] = useState<Focus | null>(null);
  const [opts, setOpts] = useState<ViewOptions>({ layer: null, excludeSinks: false });
  const [banner, setBanner] = useState<{ kind: "error" | "info"; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const handle = useRef<RunHandle | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);

  const setSettings = useCallback((s: Settings) => {
    setSettingsState(s);
    saveSettings(s);
  }, []);

  useEffect(() => {
    window.__attentionExplorer = { session: () => loaded[active].session, sessions: () => loaded.map((l) => l.session) };
  }, [loaded, active]);

  const captureAllowed = conn.state === "up" && !conn.captureProblem;

  const generate = useCallback(() => {
    const live = loaded[0].session;
    const h = startGeneration(live, settings, captureAllowed, conn.models[0]);
    handle.current = h;
    setBusy(true);
    void h.done.finally(() => {
      if (handle.current === h) handle.current = null;
      setBusy(false);
    });
  }, [loaded, settings, captureAllowed, conn.models]);

  const onSend = (text: string) => {
    loaded[0].session.addMessage("user", text);
    generate();
  };
  const onStop = () => handle.current?.abort();
  const onRegenerate = () => {
    const live = loaded[0].session;
    const last = [...live.messages].reverse().find((m) => !m.superseded);
    if (!last || last.role !== "assistant") return;
    last.superseded = true; // kept in the trace (and exported), not sent again
    setPinned(null);
    setHover(null);
    setLastHover(null);
    generate();
  };

  const onExport = () => {
    const text = exportTrace(session);
    const blob = new Blob([text], { type: "application/x-ndjson" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${session.traceId}.jsonl`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  };

  const onImportFile = async (file: File) => {
    const text = await file.text();
    try {
      const s = importTrace(text);
      const next = [...loaded, { session: s, label: `Imported: ${file.name}`, live: false }];
      setLoaded(next);
      setActive(next.length - 1);
      setPinned(null);
      setHover(null);
      setLastHover(null);
      setBanner({ kind: "info", text: `Imported ${file.name}: ${s.runs.size} run(s), ${s.messages.length} message(s).` });
    } catch (e) {
      const msg = e instanceof TraceImportError ? e.message : `Trace not imported: ${(e as Error).message}`;
      setBanner({ kind: "error", text: `${file.name}: ${msg}` });
    }
  };

  const lensFocus = pinned ?? hover ?? lastHover;
  const connLabel =
    conn.state === "checking" ? "checking…" : conn.state === "down" ? "disconnected" : conn.captureProblem ? "connected · capture off" : "connected";

  return (
    <div className={`app ${lensFocus ? "lens-open" : ""}`}>
      <header className="topbar">
        <div className="brand">
          Attention Explorer
        </div>
        <nav className="views" role="tablist">
          {(["chat", "inspect"] as View[]).map((v) => (
            <button key={v} role="tab" aria-selected={view === v} className={view === v ? "tab active" : "tab"} onClick={() => setView(v)} data-view={v}>
              {v === "chat" ? "Chat" : "Inspect"}
            </button>
          ))}
        </nav>
        <select
          className="session-select"
          value={active}
          onChange={(e) => {
            setActive(Number(e.target.value));
            setPinned(null);
            setHover(null);
            setLastHover(null);
          }}
          aria-label="session"
        >
          {loaded.map((l, i) => (
            <option key={l.session.traceId} value={i}>
              {l.label}
            </option>
          ))}
        </select>
        <div className="spacer" />
        <button className="btn" onClick={onExport} disabled={session.messages.length === 0}>
          Export
        </button>
        <button className="btn" onClick={() => fileInput.current?.click()}>
          Import
        </button>
        <input
          ref={fileInput}
          type="file"
          accept=".jsonl,.ndjson,application/x-ndjson,text/plain"
          style={{ display: "none" }}
          data-testid="import-input"
          onChange={(e) => {
            const f = e.target.files?.[0];
            if (f) void onImportFile(f);
            e.target.value = "";
          }}
        />
        <button className={`btn ${showSettings ? "active" : ""}`} onClick={() => setShowSettings(!showSettings)}>
          Settings
        </button>
        <span className={`conn conn-${conn.state} ${conn.captureProblem ? "conn-nocapture" : ""}`} data-testid="connection" title={settings.serverUrl}>
          <span className="dot" /> {connLabel}
        </span>
      </header>
      {conn.state === "up" && conn.captureProblem && (
        <div className="banner warn" role="status" data-testid="capture-problem">
          {conn.captureProblem} Chat still works, without attention.
        </div>
      )}
      {conn.state === "down" && (
        <div className="banner warn" role="status">
          Cannot reach {settings.serverUrl}/health. Start the server (python -m sglang.launch_server --return-attention-tokens) or change the URL in
          Settings. Imported traces still work offline.
        </div>
      )}
      {banner && (
        <div className={`banner ${banner.kind}`} role={banner.kind === "error" ? "alert" : "status"} data-testid="banner">
          <pre>{banner.text}</pre>
          <button className="icon-btn" onClick={() => setBanner(null)} aria-label="dismiss">
            ×
          </button>
        </div>
      )}
      <div className="main">
        {showSettings && (
          <SettingsPanel key={settings.serverUrl} settings={settings} caps={conn.caps} models={conn.models} onChange={setSettings} />
        )}
        <section className="view">
          {view === "chat" ? (
            <ChatView
              session={session}
              version={version}
              hover={hover}
              pinned={pinned}
              opts={opts}
              setOpts={setOpts}
              onHover={setHover}
              onPin={setPinned}
              busy={busy}
              canSend={conn.state === "up"}
              readOnly={!cur.live}
              onSend={onSend}
              onStop={onStop}
              onRegenerate={onRegenerate}
            />
          ) : (
            <InspectView session={session} version={version} opts={opts} setOpts={setOpts} pinned={pinned} onPin={setPinned} />
          )}
        </section>
      </div>
      <TokenLens
        session={session}
        focus={lensFocus}
        pinned={!!pinned}
        opts={opts}
        caps={conn.caps}
        onClose={() => {
          setPinned(null);
          setHover(null);
          setLastHover(null);
        }}
        onJump={(f) => setPinned(f)}
      />
      <footer className="footer">
        <Hud session={session} />
      </footer>
    </div>
  );
}
