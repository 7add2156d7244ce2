// The trace JSONL schema, version 1.1: defined once here and documented in
// docs/dashboard.md. One JSON object per line; `record_type` says which kind.
//
//   header   first line, exactly once: version, trace id, model
//   message  a chat message; assistant messages carry their run (capture settings, status)
//   token    one prompt or output token of a run, with its position
//   step     one captured step of a run: the wire entries exactly as the server sent them
//   segment  a think or output stretch of a run's output, by decode step
//   metrics  one per run: transport numbers and zone summary
//
// Compatibility: readers accept any 1.x (unknown fields are ignored, so minor versions may
// add fields) and reject other majors with a clear message.
//
// History:
//   1.0  first version
//   1.1  run.adaptive_sampling and run.router_applied (both optional: 1.0 files still load)
//   1.2  step.logit_lens (the server's logit lens entries of that step) and token.logprobs (the
//        OpenAI logprobs item of an output token); both optional. Per-head entries (head_id) and
//        sink_mass travel inside step.entries verbatim, as every wire field does.
import type { AdaptiveSamplingSwitch, AttentionEntry, CaptureSettings, LogitLensEntry, LogprobItem, SamplingSettings, ThinkPhase, Usage } from "../api/wire";

export const TRACE_SCHEMA_VERSION = "1.2";
export const TRACE_SCHEMA_MAJOR = 1;

export interface HeaderRecord {
  record_type: "header";
  version: string;
  trace_id: string;
  created_at: string;
  model: string;
  server_url?: string;
  generator?: string;
}

export interface RunInfo {
  id: string;
  model: string;
  status: "streaming" | "done" | "stopped" | "error";
  error?: string;
  started_at: string;
  capture: CaptureSettings;
  sampling: SamplingSettings;
  prompt_len: number | null;
  /** 1.1: adaptive sampling of the run (absent: not known, e.g. a 1.0 trace or capture off). */
  adaptive_sampling?: AdaptiveSamplingInfo;
  /** 1.1: the Router recommendation the run was sent with (absent: none). */
  router_applied?: RouterAppliedInfo;
}

export interface AdaptiveSamplingInfo {
  /** Whether the request had adaptive sampling on. */
  enabled: boolean;
  /** "request" (the request's attention_adaptive_sampling) or "server_default" (the server flag decided). */
  source: "request" | "server_default" | null;
  /** --attention-adaptive-steps of the server (from /v1/attention/capabilities), or null. */
  steps: number | null;
  /** The server's switch (choices[0].attention_adaptive_sampling) exactly as sent, or null: none happened. */
  switch: AdaptiveSamplingSwitch | null;
}

export interface RouterAppliedInfo {
  /** Zone the recommendation was made for, and the Router's confidence in it (0..1, null if unknown). */
  zone: string;
  confidence: number | null;
  temperature: number;
  top_p: number;
  capture_mode: string;
  basis?: string;
  applied_at?: string;
}

export interface MessageRecord {
  record_type: "message";
  id: string;
  role: "system" | "user" | "assistant";
  content: string;
  reasoning_content?: string;
  created_at: string;
  superseded?: boolean;
  run?: RunInfo;
}

export interface TokenRecord {
  record_type: "token";
  run_id: string;
  /** Position over prompt + output, from 0. */
  index: number;
  kind: "prompt" | "output";
  /** Decode step for output tokens; null for prompt tokens. */
  step: number | null;
  token_id: number | null;
  text: string;
  masked?: boolean;
  think_phase?: ThinkPhase;
  segment_id?: string;
  /** 1.2: the OpenAI logprobs item of an output token (token, logprob, top_logprobs). */
  logprobs?: LogprobItem;
}

export interface StepRecord {
  record_type: "step";
  run_id: string;
  /** Decode step, or null for a prompt-attention query. */
  step: number | null;
  /** Position of the token this step produced (prompt_len + step), or the prompt query position. */
  token_index: number;
  entries: AttentionEntry[];
  /** 1.2: logit lens entries of this decode step (return_logit_lens). */
  logit_lens?: LogitLensEntry[];
}

export interface SegmentRecord {
  record_type: "segment";
  run_id: string;
  id: string;
  type: "assistant_think" | "assistant_output";
  start_step: number;
  end_step: number;
}

export interface MetricsRecord {
  record_type: "metrics";
  run_id: string;
  capture_mode: string;
  token_count: number;
  prompt_tokens: number | null;
  bytes_received: number;
  attention_bytes: number;
  chunk_count: number;
  first_byte_ms: number | null;
  first_token_ms: number | null;
  first_render_ms: number | null;
  duration_ms: number | null;
  tokens_per_sec: number | null;
  finish_reason: string | null;
  usage: Usage | null;
  avg_entropy: number | null;
  dominant_zone: string | null;
  zone_counts: Record<string, number>;
}

export type TraceRecord = HeaderRecord | MessageRecord | TokenRecord | StepRecord | SegmentRecord | MetricsRecord;
export const RECORD_TYPES = ["header", "message", "token", "step", "segment", "metrics"] as const;
