// Types of the capture wire format the server speaks (docs/architecture.md#wire-response).
// These mirror the JSON exactly; the UI never renames wire fields, so a trace can keep
// entries verbatim and replay them through the same ingestion code.

export type ThinkPhase = "think" | "output";

export interface MoeRouting {
  [layerId: string]: { experts: number[]; weights: number[] };
}

/** One raw top-k entry: one captured layer of one captured step (or one prompt query). */
export interface RawEntry {
  mode?: "raw";
  layer_id: number;
  decode_step: number | null;
  query_position: number;
  token_positions: number[];
  attention_scores: number[];
  topk_logits: number[];
  logsumexp_candidates: number;
  masked_mass?: number;
  think_phase?: ThinkPhase;
  moe_routing?: MoeRouting;
  prompt?: boolean;
  /** Attention on the sink positions (the first `attention_sink_tokens`, default 1), exact. */
  sink_mass?: number;
  /** Per-head capture (attention_capture_heads): the query head this entry describes. */
  head_id?: number;
  /** Capture format version (absent on older traces): 2 = sink-aware fingerprint, 1 = original. */
  fingerprint_version?: number;
}

export interface LayerSketch {
  top_hubs: [number, number][];
  dist_hist: number[];
  entropy: number;
  mass_captured: number;
  sink_mass?: number;
}

export interface SketchEntry {
  mode: "sketch";
  decode_step: number;
  query_position: number;
  layer_sketches: Record<string, LayerSketch>;
  think_phase?: ThinkPhase;
  moe_routing?: MoeRouting;
  fingerprint_version?: number;
}

export interface FingerprintEntry {
  mode: "fingerprint";
  decode_step: number;
  step?: number;
  query_position: number;
  fingerprint: number[];
  manifold: string;
  manifold_confidence: number;
  /** Set when the server runs with --attention-hints-url: the sidecar cluster of this step (-1 = noise). */
  cluster_id?: number;
  cluster_zone?: string;
  think_phase?: ThinkPhase;
  moe_routing?: MoeRouting;
  /** 2 = sink-aware (local/mid/long and histogram over non-sink keys, renormalized), 1 = original; absent = 1. */
  fingerprint_version?: number;
  /** Attention on the sink positions (sent with fingerprint_version 2). */
  sink_mass?: number;
}

export type AttentionEntry = RawEntry | SketchEntry | FingerprintEntry;

export interface OutputTokenInfo {
  step: number;
  id: number;
  text: string;
  think_phase?: ThinkPhase;
}

export interface PromptTokenInfo {
  position: number;
  /** Absent on masked positions: the server keeps private prompt tokens to itself. */
  id?: number | null;
  text?: string | null;
  masked: boolean;
}

/** One logit-lens reading: a layer's residual stream read through the final norm + unembedding. */
export interface LensToken {
  id: number;
  text: string;
  prob: number;
}
export interface LogitLensEntry {
  decode_step: number;
  layer_id: number;
  top_tokens: LensToken[];
  /** The token the model produced at that step, with its lens probability and rank (0 = top). */
  token?: LensToken & { rank: number };
}

/** OpenAI chat logprobs: one item per output token. */
export interface LogprobItem {
  token: string;
  logprob: number;
  bytes?: number[] | null;
  top_logprobs?: { token: string; logprob: number; bytes?: number[] | null }[];
}

export interface ChunkChoice {
  index: number;
  delta?: { role?: string; content?: string | null; reasoning_content?: string | null };
  message?: { role?: string; content?: string | null; reasoning_content?: string | null };
  finish_reason?: string | null;
  attention_tokens?: AttentionEntry[];
  attention_output_tokens?: OutputTokenInfo[];
  attention_prompt_tokens?: PromptTokenInfo[];
  /** Logit lens entries of this chunk's tokens (return_logit_lens). */
  logit_lens?: LogitLensEntry[];
  /** OpenAI logprobs of this chunk's tokens (logprobs / top_logprobs). */
  logprobs?: { content?: LogprobItem[] | null } | null;
  /** Adaptive sampling switch (meta_info.attention_adaptive_sampling), once it happened. */
  attention_adaptive_sampling?: AdaptiveSamplingSwitch | null;
}

export interface AdaptiveSamplingSwitch {
  step: number;
  before: { temperature?: number; top_p?: number; [k: string]: unknown };
  after: { temperature?: number; top_p?: number; [k: string]: unknown };
  cluster_id: number | null;
  zone: string | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatChunk {
  id?: string;
  object?: string;
  created?: number;
  model?: string;
  choices: ChunkChoice[];
  usage?: Usage | null;
}

export interface Capabilities {
  supported: boolean;
  modes?: string[];
  max_top_k?: number;
  max_layers?: number;
  default_mode?: string;
  features?: Record<string, boolean>;
  guardrails?: {
    max_concurrent_capture?: number;
    requires_api_key?: boolean;
    system_prompt_masked?: boolean;
    disabled_in_production?: boolean;
  };
  /** Manifold hints the scheduler reads from a sidecar (--attention-hints-url). */
  manifold_hints?: { enabled: boolean; refresh_interval_s?: number };
  /** Adaptive sampling: switch temperature/top_p to a cluster's hint after `steps` steps in it. */
  adaptive_sampling?: { supported: boolean; default: boolean; steps: number; requires_mode?: string };
}

export type CaptureMode = "raw" | "sketch" | "fingerprint";

/** The capture settings of one run; they become request fields. */
export interface CaptureSettings {
  mode: CaptureMode;
  topK: number;
  layers: "last" | "auto" | number[];
  headIds: number[];
  maskSystemPrompt: boolean;
  maskPrefix: number;
  includePromptAttention: boolean;
  /** Per-head capture (attention_capture_heads: "each"; raw mode). Optional: older traces lack it. */
  perHead?: boolean;
  /** Logit lens (return_logit_lens) with its layers ("auto", "last" or ids) and top-k. */
  logitLens?: boolean;
  lensLayers?: "last" | "auto" | number[];
  lensTopK?: number;
  /** OpenAI top_logprobs per output token (0 = off). */
  topLogprobs?: number;
}

export interface SamplingSettings {
  maxTokens: number;
  temperature: number;
  topP: number;
}

export function entryKind(e: AttentionEntry): CaptureMode {
  if ((e as SketchEntry).mode === "sketch") return "sketch";
  if ((e as FingerprintEntry).mode === "fingerprint") return "fingerprint";
  return "raw";
}

/** Check the shape of one entry; returns a message naming the first bad field, or null. */
export function validateEntry(e: unknown): string | null {
  if (typeof e !== "object" || e === null || Array.isArray(e)) return "entry is not an object";
  const o = e as Record<string, unknown>;
  const isNumArr = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === "number");
  if (typeof o.query_position !== "number") return "query_position must be a number";
  const kind = entryKind(o as unknown as AttentionEntry);
  if (kind === "raw") {
    if (typeof o.layer_id !== "number") return "layer_id must be a number";
    if (!(o.decode_step === null || typeof o.decode_step === "number")) return "decode_step must be a number or null";
    for (const f of ["token_positions", "attention_scores", "topk_logits"]) {
      if (!isNumArr(o[f])) return `${f} must be an array of numbers`;
    }
    const k = (o.token_positions as number[]).length;
    if ((o.attention_scores as number[]).length !== k || (o.topk_logits as number[]).length !== k) {
      return "token_positions, attention_scores and topk_logits must have the same length";
    }
    if (typeof o.logsumexp_candidates !== "number") return "logsumexp_candidates must be a number";
    return null;
  }
  if (typeof o.decode_step !== "number") return "decode_step must be a number";
  if (kind === "sketch") {
    const ls = o.layer_sketches;
    if (typeof ls !== "object" || ls === null) return "layer_sketches must be an object";
    for (const [layer, s] of Object.entries(ls as Record<string, unknown>)) {
      const sk = s as Record<string, unknown>;
      if (!isNumArr(sk?.dist_hist) || (sk.dist_hist as number[]).length !== 16) {
        return `layer_sketches.${layer}.dist_hist must be 16 numbers`;
      }
      if (!Array.isArray(sk.top_hubs)) return `layer_sketches.${layer}.top_hubs must be an array`;
    }
    return null;
  }
  if (!isNumArr(o.fingerprint) || (o.fingerprint as number[]).length !== 20) return "fingerprint must be 20 numbers";
  return null;
}
