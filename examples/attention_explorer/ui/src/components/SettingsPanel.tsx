// Server and per-run capture settings. Applies to the next run.
import { memo, useState } from "react";
import type { Capabilities, CaptureMode } from "../api/wire";
import { parseExtra, parseLayers, type Settings } from "../state/settings";

interface Props {
  settings: Settings;
  caps: Capabilities | null;
  models: string[];
  onChange: (s: Settings) => void;
}

// Memoized: hovering tokens re-renders the app, and these inputs need not follow.
export const SettingsPanel = memo(function SettingsPanel({ settings, caps, models, onChange }: Props) {
  const [layersText, setLayersText] = useState(Array.isArray(settings.capture.layers) ? settings.capture.layers.join(",") : settings.capture.layers);
  const [serverText, setServerText] = useState(settings.serverUrl);
  const [sidecarText, setSidecarText] = useState(settings.sidecarUrl);
  const layersOk = parseLayers(layersText) !== null;
  const extra = parseExtra(settings.extraJson);
  const maxK = caps?.max_top_k ?? 64;
  const offered = (caps?.modes ?? []).filter((m): m is CaptureMode => m === "raw" || m === "sketch" || m === "fingerprint");
  // A server with capture off lists no modes; keep all three selectable for when it comes back.
  const modes: CaptureMode[] = offered.length ? offered : ["raw", "sketch", "fingerprint"];
  const set = (patch: Partial<Settings>) => onChange({ ...settings, ...patch });
  const setCap = (patch: Partial<Settings["capture"]>) => onChange({ ...settings, capture: { ...settings.capture, ...patch } });
  const setSam = (patch: Partial<Settings["sampling"]>) => onChange({ ...settings, sampling: { ...settings.sampling, ...patch } });
  const adaptive = caps?.adaptive_sampling;
  const adaptiveNote =
    settings.capture.mode !== "fingerprint"
      ? "fingerprint mode only"
      : adaptive && !adaptive.supported
        ? "this server has no manifold hints (--attention-hints-url)"
        : adaptive
          ? `switches to a cluster's hint after ${adaptive.steps} steps in it${adaptive.default ? "; on by default on this server" : ""}`
          : "";
  return (
    <div className="settings" data-testid="settings">
      <fieldset>
        <legend>Server</legend>
        <label>
          URL
          <input
            aria-label="server url"
            value={serverText}
            onChange={(e) => setServerText(e.target.value)}
            onBlur={() => set({ serverUrl: serverText.trim() })}
            onKeyDown={(e) => e.key === "Enter" && set({ serverUrl: serverText.trim() })}
          />
        </label>
        <label>
          API key
          <input type="password" value={settings.apiKey} onChange={(e) => set({ apiKey: e.target.value })} placeholder={caps?.guardrails?.requires_api_key ? "required" : "optional"} />
        </label>
        <label>
          Model
          <input list="models" value={settings.model} onChange={(e) => set({ model: e.target.value })} placeholder={models[0] ?? "server default"} />
          <datalist id="models">
            {models.map((m) => (
              <option key={m} value={m} />
            ))}
          </datalist>
        </label>
      </fieldset>
      <fieldset>
        <legend>Sidecar (optional)</legend>
        <label>
          attention_sidecar URL
          <input
            aria-label="sidecar url"
            value={sidecarText}
            placeholder="e.g. http://127.0.0.1:9010"
            onChange={(e) => setSidecarText(e.target.value)}
            onBlur={() => set({ sidecarUrl: sidecarText.trim() })}
            onKeyDown={(e) => e.key === "Enter" && set({ sidecarUrl: sidecarText.trim() })}
          />
        </label>
      </fieldset>
      <fieldset>
        <legend>Capture (next run)</legend>
        <label className="check">
          <input type="checkbox" checked={settings.captureEnabled} onChange={(e) => set({ captureEnabled: e.target.checked })} aria-label="capture attention" /> capture attention
        </label>
        <label>
          Mode
          <select value={settings.capture.mode} onChange={(e) => setCap({ mode: e.target.value as CaptureMode })} aria-label="capture mode">
            {modes.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </label>
        <label className="check" title="attention_adaptive_sampling: the server switches temperature and top_p to the hint of the cluster the fingerprints settle in">
          <input type="checkbox" checked={settings.adaptiveSampling} onChange={(e) => set({ adaptiveSampling: e.target.checked })} aria-label="adaptive sampling" /> adaptive sampling
          {adaptiveNote && <span className="muted small"> ({adaptiveNote})</span>}
        </label>
        <label>
          Top-k ({5}–{maxK})
          <input type="number" min={5} max={maxK} value={settings.capture.topK} onChange={(e) => setCap({ topK: Math.max(5, Math.min(maxK, Number(e.target.value) || 5)) })} aria-label="top k" />
        </label>
        <label>
          Layers
          <input
            value={layersText}
            className={layersOk ? "" : "invalid"}
            onChange={(e) => {
              setLayersText(e.target.value);
              const l = parseLayers(e.target.value);
              if (l) setCap({ layers: l });
            }}
            placeholder="last | auto | 0,10,20"
            aria-label="layers"
          />
        </label>
        {!layersOk && <div className="error small">layers: use last, auto, or comma-separated layer numbers</div>}
        <label>
          Head ids
          <input
            value={settings.capture.headIds.join(",")}
            onChange={(e) => setCap({ headIds: e.target.value.split(",").map((x) => x.trim()).filter((x) => /^\d+$/.test(x)).map(Number) })}
            placeholder="all heads"
          />
        </label>
        <label className="check">
          <input type="checkbox" checked={settings.capture.includePromptAttention} onChange={(e) => setCap({ includePromptAttention: e.target.checked })} /> include prompt attention
        </label>
        <label className="check" title='attention_capture_heads: "each": one top-k per query head instead of their mean (Heads tab, head grid)'>
          <input type="checkbox" checked={!!settings.capture.perHead} onChange={(e) => setCap({ perHead: e.target.checked })} aria-label="per-head capture" /> per-head capture
          {settings.capture.perHead && settings.capture.mode !== "raw" && <span className="muted small"> (raw mode only)</span>}
          {settings.capture.perHead && settings.capture.headIds.length > 0 && <span className="muted small"> (replaces the head ids)</span>}
        </label>
        <label className="check" title="return_logit_lens: each captured step's residual stream per layer read through the final norm and unembedding (Logit lens tab)">
          <input type="checkbox" checked={!!settings.capture.logitLens} onChange={(e) => setCap({ logitLens: e.target.checked })} aria-label="logit lens" /> logit lens
          {caps?.features && caps.features.logit_lens === false && <span className="muted small"> (this server has none)</span>}
        </label>
        {settings.capture.logitLens && (
          <label>
            Lens layers · top tokens
            <span style={{ display: "flex", gap: 4 }}>
              <select
                value={Array.isArray(settings.capture.lensLayers) ? "last" : (settings.capture.lensLayers ?? "auto")}
                onChange={(e) => setCap({ lensLayers: e.target.value as "auto" | "last" })}
                aria-label="lens layers"
              >
                <option value="auto">auto (L/4, L/2, 3L/4, last)</option>
                <option value="last">last</option>
              </select>
              <input
                type="number"
                min={1}
                max={20}
                value={settings.capture.lensTopK ?? 5}
                onChange={(e) => setCap({ lensTopK: Math.max(1, Math.min(20, Number(e.target.value) || 5)) })}
                aria-label="lens top k"
                style={{ width: 56 }}
              />
            </span>
          </label>
        )}
        <label title="OpenAI logprobs + top_logprobs: the sampler's alternatives for each output token (Logit lens tab); 0 = off">
          Next-token alternatives (top_logprobs, 0 = off)
          <input
            type="number"
            min={0}
            max={20}
            value={settings.capture.topLogprobs ?? 0}
            onChange={(e) => setCap({ topLogprobs: Math.max(0, Math.min(20, Number(e.target.value) || 0)) })}
            aria-label="top logprobs"
          />
        </label>
      </fieldset>
      <fieldset>
        <legend>Privacy</legend>
        <label>
          System prompt
          <textarea rows={2} value={settings.systemPrompt} onChange={(e) => set({ systemPrompt: e.target.value })} placeholder="(none)" aria-label="system prompt" />
        </label>
        <label className="check">
          <input type="checkbox" checked={settings.capture.maskSystemPrompt} onChange={(e) => setCap({ maskSystemPrompt: e.target.checked })} aria-label="mask system prompt" /> mask system prompt in attention
        </label>
        <label>
          Mask first N tokens
          <input type="number" min={0} value={settings.capture.maskPrefix} onChange={(e) => setCap({ maskPrefix: Math.max(0, Number(e.target.value) || 0) })} />
        </label>
        {caps?.guardrails?.system_prompt_masked && <div className="muted small">The server masks system prompts for every request.</div>}
      </fieldset>
      <fieldset>
        <legend>Sampling</legend>
        <label>
          Max tokens
          <input type="number" min={1} value={settings.sampling.maxTokens} onChange={(e) => setSam({ maxTokens: Math.max(1, Number(e.target.value) || 1) })} aria-label="max tokens" />
        </label>
        <label>
          Temperature
          <input type="number" step={0.1} min={0} value={settings.sampling.temperature} onChange={(e) => setSam({ temperature: Math.max(0, Number(e.target.value) || 0) })} aria-label="temperature" />
        </label>
        <label>
          top_p
          <input aria-label="top p" type="number" step={0.05} min={0} max={1} value={settings.sampling.topP} onChange={(e) => setSam({ topP: Math.min(1, Math.max(0, Number(e.target.value) || 0)) })} />
        </label>
        <label>
          Extra request fields (JSON)
          <input value={settings.extraJson} onChange={(e) => set({ extraJson: e.target.value })} placeholder='{"ignore_eos": true}' className={extra.ok ? "" : "invalid"} aria-label="extra fields" />
        </label>
        {!extra.ok && <div className="error small">{extra.message}</div>}
      </fieldset>
    </div>
  );
});
