// User settings: server, capture and sampling choices. Persisted in localStorage so a
// reload keeps them; the server URL also comes from ?server= or VITE_SERVER_URL.
import type { CaptureSettings, SamplingSettings } from "../api/wire";

export interface Settings {
  serverUrl: string;
  apiKey: string;
  model: string;
  captureEnabled: boolean;
  capture: CaptureSettings;
  sampling: SamplingSettings;
  systemPrompt: string;
  /** Extra request fields as JSON text, e.g. {"ignore_eos": true}. */
  extraJson: string;
  /** python -m sglang.srt.attention_sidecar base URL; empty = none (the browser's PCA is used). */
  sidecarUrl: string;
  /** Ask for adaptive sampling (attention_adaptive_sampling; fingerprint capture only). */
  adaptiveSampling: boolean;
}

const KEY = "attention-explorer.settings.v1";

export function defaultServerUrl(): string {
  const fromEnv = (import.meta as unknown as { env?: Record<string, string | undefined> }).env?.VITE_SERVER_URL;
  return fromEnv || "http://localhost:30000";
}

export function defaultSettings(): Settings {
  return {
    serverUrl: defaultServerUrl(),
    apiKey: "",
    model: "",
    captureEnabled: true,
    capture: {
      mode: "raw",
      topK: 32,
      layers: "last",
      headIds: [],
      maskSystemPrompt: false,
      maskPrefix: 0,
      includePromptAttention: false,
    },
    sampling: { maxTokens: 256, temperature: 0.7, topP: 0.95 },
    systemPrompt: "",
    extraJson: "",
    sidecarUrl: (import.meta as unknown as { env?: Record<string, string | undefined> }).env?.VITE_SIDECAR_URL || "",
    adaptiveSampling: false,
  };
}

export function loadSettings(): Settings {
  const d = defaultSettings();
  let s = d;
  try {
    const raw = localStorage.getItem(KEY);
    if (raw) {
      const j = JSON.parse(raw) as Partial<Settings>;
      s = { ...d, ...j, capture: { ...d.capture, ...(j.capture ?? {}) }, sampling: { ...d.sampling, ...(j.sampling ?? {}) } };
    }
  } catch {
    /* a broken stored value falls back to defaults */
  }
  const fromQuery = new URLSearchParams(location.search).get("server");
  if (fromQuery) s = { ...s, serverUrl: fromQuery };
  const sidecarQuery = new URLSearchParams(location.search).get("sidecar");
  if (sidecarQuery !== null) s = { ...s, sidecarUrl: sidecarQuery };
  return s;
}

export function saveSettings(s: Settings): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    /* private mode: settings simply do not persist */
  }
}

/** Parse the extra-fields JSON; returns an error message instead of throwing. */
export function parseExtra(text: string): { ok: true; value: Record<string, unknown> } | { ok: false; message: string } {
  if (!text.trim()) return { ok: true, value: {} };
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) return { ok: false, message: "extra fields must be a JSON object" };
    return { ok: true, value: v };
  } catch (e) {
    return { ok: false, message: `extra fields: ${(e as Error).message}` };
  }
}

/** "last", "auto" or a comma list of layer ids. */
export function parseLayers(text: string): CaptureSettings["layers"] | null {
  const t = text.trim();
  if (t === "last" || t === "auto") return t;
  const parts = t.split(",").map((x) => x.trim()).filter(Boolean);
  if (!parts.length || parts.some((p) => !/^\d+$/.test(p))) return null;
  return parts.map(Number);
}
