// HTTP calls to the server: health, capabilities, models, and the streaming chat.
import { SseDecoder, type SseItem } from "./sse";
import type { AdaptiveConfig } from "../trace/session";
import type { Capabilities, CaptureSettings, ChatChunk, SamplingSettings } from "./wire";

export function trimUrl(url: string): string {
  return url.trim().replace(/\/+$/, "");
}

export interface ChatRequestOptions {
  model: string;
  messages: { role: string; content: string }[];
  capture: CaptureSettings;
  sampling: SamplingSettings;
  captureEnabled: boolean;
  /** Ask for adaptive sampling (sent only with fingerprint capture, which it needs). */
  adaptiveSampling?: boolean;
  /** Extra request fields (e.g. ignore_eos), merged last. */
  extra?: Record<string, unknown>;
}

/** The request body of the capture contract (docs/architecture.md#wire-request). */
export function buildChatRequest(o: ChatRequestOptions, stream = true): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: o.model,
    messages: o.messages,
    stream,
    max_tokens: o.sampling.maxTokens,
    temperature: o.sampling.temperature,
    top_p: o.sampling.topP,
  };
  if (stream) body.stream_options = { include_usage: true };
  if (o.captureEnabled) {
    const c = o.capture;
    body.return_attention_tokens = true;
    body.top_k_attention = c.topK;
    body.attention_sketch_mode = c.mode === "sketch";
    body.attention_fingerprint_mode = c.mode === "fingerprint";
    body.attention_capture_layers = c.layers;
    // Per-head capture (raw mode) replaces the head filter: one entry per head instead of their mean.
    if (c.perHead && c.mode === "raw") body.attention_capture_heads = "each";
    else if (c.headIds.length) body.attention_capture_head_ids = c.headIds;
    if (c.maskPrefix > 0) body.attention_mask_prefix = c.maskPrefix;
    body.attention_mask_system_prompt = c.maskSystemPrompt;
    body.include_prompt_attention = c.includePromptAttention;
    if (o.adaptiveSampling && c.mode === "fingerprint") body.attention_adaptive_sampling = true;
    if (c.logitLens) {
      body.return_logit_lens = true;
      body.logit_lens_layers = c.lensLayers ?? "auto";
      body.logit_lens_top_k = c.lensTopK ?? 5;
    }
  }
  // Next-token alternatives are plain OpenAI logprobs: they need no capture permission.
  if ((o.capture.topLogprobs ?? 0) > 0) {
    body.logprobs = true;
    body.top_logprobs = o.capture.topLogprobs;
  }
  return { ...body, ...(o.extra ?? {}) };
}

/**
 * Whether a request body has adaptive sampling on: its own attention_adaptive_sampling field
 * (also when set through the extra fields), else the server's default, which applies to
 * fingerprint-mode capture only. Null for a request without capture.
 */
export function adaptiveConfigOf(body: Record<string, unknown>, caps: Capabilities | null): AdaptiveConfig | null {
  const steps = caps?.adaptive_sampling?.steps ?? null;
  const asked = body.attention_adaptive_sampling;
  if (typeof asked === "boolean") return { enabled: asked, source: "request", steps };
  if (body.return_attention_tokens !== true) return null;
  return { enabled: body.attention_fingerprint_mode === true && caps?.adaptive_sampling?.default === true, source: "server_default", steps };
}

function headers(apiKey?: string): Record<string, string> {
  const h: Record<string, string> = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

/** Message of an OpenAI-style error body, or the raw text. */
export async function errorMessage(res: Response): Promise<string> {
  const text = await res.text().catch(() => "");
  try {
    const j = JSON.parse(text);
    const e = j.error ?? j;
    const param = e.param ? ` (field: ${e.param})` : "";
    if (e.message) return `HTTP ${res.status}: ${e.message}${param}`;
    if (j.detail) return `HTTP ${res.status}: ${typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)}`;
  } catch {
    /* not JSON */
  }
  return `HTTP ${res.status}: ${text.slice(0, 300) || res.statusText}`;
}

export async function fetchHealth(server: string, signal?: AbortSignal): Promise<boolean> {
  try {
    const res = await fetch(`${trimUrl(server)}/health`, { signal });
    return res.ok;
  } catch {
    return false;
  }
}

export type CapabilitiesResult =
  | { ok: true; caps: Capabilities }
  | { ok: false; message: string };

export async function fetchCapabilities(server: string, apiKey?: string, signal?: AbortSignal): Promise<CapabilitiesResult> {
  try {
    const res = await fetch(`${trimUrl(server)}/v1/attention/capabilities`, { signal, headers: headers(apiKey) });
    if (res.status === 404) return { ok: false, message: "This server has no /v1/attention/capabilities endpoint: attention capture is not available." };
    if (!res.ok) return { ok: false, message: await errorMessage(res) };
    return { ok: true, caps: (await res.json()) as Capabilities };
  } catch (e) {
    return { ok: false, message: `cannot reach the server: ${(e as Error).message}` };
  }
}

export async function fetchModels(server: string, signal?: AbortSignal): Promise<string[]> {
  try {
    const res = await fetch(`${trimUrl(server)}/v1/models`, { signal });
    if (!res.ok) return [];
    const j = await res.json();
    return Array.isArray(j?.data) ? j.data.map((m: { id: string }) => m.id) : [];
  } catch {
    return [];
  }
}

export interface StreamHandlers {
  onFirstByte: () => void;
  onItem: (item: SseItem) => void;
  /** Total body bytes read so far. */
  onBytes?: (total: number) => void;
}

/**
 * POST the chat request and feed SSE items to `onItem` as the bytes arrive.
 * Resolves when the stream ends; rejects with a readable message on HTTP errors.
 */
export async function streamChat(
  server: string,
  body: Record<string, unknown>,
  h: StreamHandlers,
  signal: AbortSignal,
  apiKey?: string,
): Promise<void> {
  const res = await fetch(`${trimUrl(server)}/v1/chat/completions`, {
    method: "POST",
    headers: headers(apiKey),
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) throw new Error(await errorMessage(res));
  if (!res.body) throw new Error("the server sent no response body");
  const reader = res.body.getReader();
  const dec = new SseDecoder();
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (!value || !value.byteLength) continue;
    if (first) {
      first = false;
      h.onFirstByte();
    }
    for (const item of dec.push(value)) h.onItem(item);
    h.onBytes?.(dec.bytes);
  }
  for (const item of dec.end()) h.onItem(item);
}

/** A non-streaming response has the chunk fields on choices[0] (message instead of delta). */
export async function completeChat(server: string, body: Record<string, unknown>, signal: AbortSignal, apiKey?: string): Promise<ChatChunk> {
  const res = await fetch(`${trimUrl(server)}/v1/chat/completions`, {
    method: "POST",
    headers: headers(apiKey),
    body: JSON.stringify({ ...body, stream: false, stream_options: undefined }),
    signal,
  });
  if (!res.ok) throw new Error(await errorMessage(res));
  return (await res.json()) as ChatChunk;
}
