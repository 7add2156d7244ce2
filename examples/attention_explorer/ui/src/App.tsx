// The dashboard shell: top bar (views, sessions, export/import, connection), settings,
// the active view, the Token Lens drawer and the HUD. Every view reads one TraceSession.
import { useCallback, useEffect, useRef, useState } from "react";
import { AttentionMapView } from "./components/AttentionMapView";
import { ChatView } from "./components/ChatView";
import { CompareView } from "./components/CompareView";
import { ManifoldView } from "./components/ManifoldView";
import { PendingApply, RouterView } from "./components/RouterView";
import { SavedView } from "./components/SavedView";
import { type ViewOptions } from "./components/focus";
import { Hud } from "./components/Hud";
import { InspectView } from "./components/InspectView";
import { SettingsPanel } from "./components/SettingsPanel";
import { TokenLens } from "./components/TokenLens";
import { startGeneration, type RunHandle } from "./state/chat";
import { useConnection } from "./state/connection";
import { loadPendingApply, type RouterApply, savePendingApply, withApply } from "./state/routerApply";
import { loadSettings, saveSettings, type Settings } from "./state/settings";
import { useSidecar } from "./state/sidecar";
import { useEscape } from "./state/useEscape";
import { useFocus } from "./state/useFocus";
import { deleteSaved, listSaved, loadTrace, renameSaved, type SavedMeta, saveSession } from "./storage/savedSessions";
import { useSessionVersion } from "./state/useSession";
import { exportTrace, importTrace, TraceImportError } from "./trace/jsonl";
import { TraceSession } from "./trace/session";
import { freeTraceId, importInto, liveEntry, type Loaded, nextKey } from "./state/loaded";

type View = "chat" | "inspect" | "map" | "manifold" | "router" | "compare" | "saved";
const VIEWS: { id: View; label: string }[] = [
  { id: "chat", label: "Chat" },
  { id: "inspect", label: "Inspect" },
  { id: "map", label: "Map" },
  { id: "manifold", label: "Manifold" },
  { id: "router", label: "Router" },
  { id: "compare", label: "Compare" },
  { id: "saved", label: "Saved" },
];

/** Views with the Token Lens column (docked: opening it never reflows the view). */
const LENS_VIEWS: View[] = ["chat", "inspect", "map"];

declare global {
  interface Window {
    /** Read-only handle for end-to-end tests and measurements (test builds only: __TEST_HOOKS__). */
    __attentionExplorer?: { session: () => TraceSession; sessions: () => TraceSession[] };
  }
}

export function App() {
  const [loaded, setLoaded] = useState<Loaded[]>(() => [liveEntry()]);
  const [active, setActive] = useState(0);
  const cur = loaded[active];
  const session = cur.session;
  const version = useSessionVersion(session);
  const [settings, setSettingsState] = useState<Settings>(loadSettings);
  const conn = useConnection(settings.serverUrl, settings.apiKey);
  const [view, setView] = useState<View>("chat");
  const [showSettings, setShowSettings] = useState(true);
  // hovered / last hovered / pinned token (state/useFocus.ts)
  const { hover, pinned, lensFocus, setHover, setPinned, resetFocus } = useFocus();
  const [opts, setOpts] = useState<ViewOptions>({ layer: null, excludeSinks: false });
  const [banner, setBanner] = useState<{ kind: "error" | "info"; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const handle = useRef<RunHandle | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const sidecar = useSidecar(settings.sidecarUrl);
  const [saved, setSaved] = useState<SavedMeta[]>([]);
  const [savedError, setSavedError] = useState<string | null>(null);
  const [pending, setPending] = useState<RouterApply | null>(loadPendingApply);

  // Show session `at` (of `next` when the list changes) with no token focused.
  const showSession = useCallback(
    (at: number, next?: Loaded[]) => {
      if (next) setLoaded(next);
      setActive(at);
      resetFocus();
    },
    [resetFocus],
  );

  const refreshSaved = useCallback(async () => {
    try {
      setSaved(await listSaved());
      setSavedError(null);
    } catch (e) {
      setSavedError(`Saved sessions unavailable: ${(e as Error).message}`);
    }
  }, []);
  useEffect(() => {
    void refreshSaved();
  }, [refreshSaved]);

  const setSettings = useCallback((s: Settings) => {
    setSettingsState(s);
    saveSettings(s);
  }, []);

  useEffect(() => {
    if (__TEST_HOOKS__) window.__attentionExplorer = { session: () => loaded[active].session, sessions: () => loaded.map((l) => l.session) };
  }, [loaded, active]);

  // Escape closes the Token Lens (clears hover and pin) from anywhere but a text field.
  useEscape(resetFocus);

  const captureAllowed = conn.state === "up" && !conn.captureProblem;

  const generate = useCallback(() => {
    const live = loaded[0].session;
    // A Router recommendation applies to this one request, then it is used up.
    const h = startGeneration(live, withApply(settings, pending), captureAllowed, conn.models[0], conn.caps);
    if (pending) {
      live.run(h.runId).routerApplied = {
        zone: pending.zone,
        confidence: pending.confidence ?? null,
        temperature: pending.temperature,
        top_p: pending.top_p,
        capture_mode: pending.capture_mode,
        basis: pending.basis,
        appliedAt: pending.appliedAt,
      };
      setBanner({ kind: "info", text: `Router settings (${pending.zone}) applied to this run: temperature ${pending.temperature}, top_p ${pending.top_p}, capture ${pending.capture_mode}.` });
      savePendingApply(null);
      setPending(null);
    }
    handle.current = h;
    setBusy(true);
    void h.done.finally(() => {
      if (handle.current === h) handle.current = null;
      setBusy(false);
    });
  }, [loaded, settings, captureAllowed, conn.models, conn.caps, pending]);

  const onSave = async () => {
    try {
      // Saving the same trace again updates its saved copy instead of adding a duplicate.
      const prev = saved.find((m) => m.id === cur.savedId) ?? saved.find((m) => m.traceId === session.traceId);
      const meta = await saveSession(session, undefined, prev);
      await refreshSaved();
      if (!cur.savedId) setLoaded((ls) => ls.map((l) => (l.session === session ? { ...l, savedId: meta.id } : l)));
      setBanner({
        kind: "info",
        text: prev ? `Updated saved “${meta.name}” (${meta.digest.nSteps} fingerprint steps; no second copy).` : `Saved “${meta.name}” (${meta.digest.nSteps} fingerprint steps).`,
      });
    } catch (e) {
      setBanner({ kind: "error", text: `Not saved: ${(e as Error).message}` });
    }
  };

  const openSaved = useCallback(
    async (id: string) => {
      const at = loaded.findIndex((l) => l.savedId === id);
      if (at >= 0) {
        setActive(at);
        return;
      }
      const meta = saved.find((m) => m.id === id);
      try {
        const s = importTrace(await loadTrace(id));
        s.traceId = freeTraceId(loaded, s.traceId, "saved");
        const next = [...loaded, { key: nextKey(), session: s, label: `Saved: ${meta?.name ?? id}`, live: false, savedId: id }];
        showSession(next.length - 1, next);
      } catch (e) {
        const msg = e instanceof TraceImportError ? e.message : (e as Error).message;
        setBanner({ kind: "error", text: `Saved session could not be opened: ${msg}` });
      }
    },
    [loaded, saved, showSession],
  );

  // A fresh live chat; the previous one stays in the session selector (read-only).
  const onNewChat = () => {
    const old = loaded[0];
    const rest = loaded.slice(1);
    const kept = old.session.messages.length ? [{ ...old, live: false, label: `Earlier chat (${new Date().toLocaleTimeString()})` }] : [];
    showSession(0, [liveEntry(), ...kept, ...rest]);
    // banners (a Router "applied" note, an import message) belong to the previous chat
    setBanner(null);
  };

  const onApply = (a: RouterApply) => {
    savePendingApply(a);
    setPending(a);
  };
  const onCancelApply = () => {
    savePendingApply(null);
    setPending(null);
  };

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
    resetFocus();
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
      const r = importInto(loaded, text, file.name);
      if (r.kind === "existing") showSession(r.at);
      else showSession(r.at, r.next);
      setBanner({ kind: "info", text: r.text });
    } catch (e) {
      const msg = e instanceof TraceImportError ? e.message : `Trace not imported: ${(e as Error).message}`;
      setBanner({ kind: "error", text: `${file.name}: ${msg}` });
    }
  };

  const connLabel =
    conn.state === "checking" ? "checking…" : conn.state === "down" ? "disconnected" : conn.captureProblem ? "connected · capture off" : "connected";

  return (
    <div className={`app ${lensFocus ? "lens-open" : ""}`}>
      <header className="topbar">
        <div className="brand">
          Attention Explorer
        </div>
        <nav className="views" role="tablist">
          {VIEWS.map((v) => (
            <button key={v.id} role="tab" aria-selected={view === v.id} className={view === v.id ? "tab active" : "tab"} onClick={() => setView(v.id)} data-view={v.id}>
              {v.label}
            </button>
          ))}
        </nav>
        <select
          className="session-select"
          value={active}
          onChange={(e) => showSession(Number(e.target.value))}
          aria-label="session"
        >
          {loaded.map((l, i) => (
            <option key={l.key} value={i}>
              {l.label}
            </option>
          ))}
        </select>
        <div className="spacer" />
        <button className="btn" onClick={onNewChat} disabled={busy} title="start an empty chat; the current one stays in the session list">
          New chat
        </button>
        <button className="btn" onClick={() => void onSave()} disabled={session.runs.size === 0} title="keep this trace in the browser (IndexedDB)">
          Save
        </button>
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
        {sidecar.state !== "off" && (
          <span className={`conn conn-${sidecar.state === "up" ? "up" : sidecar.state === "down" ? "down" : "checking"} ${sidecar.state === "up" && !sidecar.ready ? "conn-nocapture" : ""}`} data-testid="sidecar-connection" title={settings.sidecarUrl}>
            <span className="dot" /> sidecar {sidecar.state === "up" ? (sidecar.ready ? `run ${sidecar.status?.current?.run_id}` : "no artifacts") : sidecar.state}
          </span>
        )}
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
          {view === "chat" && pending && <PendingApply pending={pending} onCancel={onCancelApply} />}
          {view === "manifold" ? (
            <ManifoldView session={session} live={loaded[0].session} version={version} sessionLabel={cur.label} saved={saved} sidecar={sidecar} onOpenSaved={(id) => void openSaved(id)} />
          ) : view === "router" ? (
            <RouterView session={session} version={version} sidecar={sidecar} pending={pending} onApply={onApply} onCancel={onCancelApply} />
          ) : view === "compare" ? (
            <CompareView saved={saved} pca={sidecar.pcaSource === "sidecar" ? sidecar.pca : null} />
          ) : view === "saved" ? (
            <SavedView
              saved={saved}
              error={savedError}
              onOpen={(id) => {
                void openSaved(id).then(() => setView("chat"));
              }}
              onRename={async (id, name) => {
                try {
                  await renameSaved(id, name);
                  setLoaded((ls) => ls.map((l) => (l.savedId === id ? { ...l, label: `Saved: ${name.trim()}` } : l)));
                } catch (e) {
                  setBanner({ kind: "error", text: (e as Error).message });
                }
                await refreshSaved();
              }}
              onDelete={async (id) => {
                try {
                  await deleteSaved(id);
                } catch (e) {
                  setBanner({ kind: "error", text: (e as Error).message });
                }
                await refreshSaved();
              }}
            />
          ) : view === "chat" ? (
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
          ) : view === "map" ? (
            <AttentionMapView session={session} version={version} serverUrl={settings.serverUrl} apiKey={settings.apiKey} caps={conn.caps} pinned={pinned} onPin={setPinned} />
          ) : (
            <InspectView session={session} version={version} opts={opts} setOpts={setOpts} pinned={pinned} onPin={setPinned} />
          )}
        </section>
        {LENS_VIEWS.includes(view) && (
          <TokenLens
            session={session}
            focus={lensFocus}
            pinned={!!pinned}
            opts={opts}
            caps={conn.caps}
            onClose={resetFocus}
            onJump={(f) => setPinned(f)}
            onFocusHead={(layer, head) => setOpts((o) => ({ ...o, layer, head }))}
          />
        )}
      </div>
      <footer className="footer">
        <Hud session={session} />
      </footer>
    </div>
  );
}
