// TraceSession: the one client data model. Every view reads it; the SSE stream, a
// non-streaming response and an imported JSONL trace all fill it through the same
// ingest* methods, so a replayed trace looks exactly like a live one.
//
// A session holds many runs (one per assistant generation, regenerations included),
// each with its prompt tokens, output tokens, per-step captures, segments and metrics,
// so later views (manifold, router, compare) can work across runs.
import type {
  AdaptiveSamplingSwitch,
  AttentionEntry,
  CaptureSettings,
  ChatChunk,
  FingerprintEntry,
  LogitLensEntry,
  LogprobItem,
  MoeRouting,
  OutputTokenInfo,
  PromptTokenInfo,
  RawEntry,
  SamplingSettings,
  SketchEntry,
  ThinkPhase,
  Usage,
} from "../api/wire";
import { entryKind } from "../api/wire";
import type { RouterAppliedInfo } from "./schema";
import { classify, type Zone, ZONES } from "../zones/zones";
import { signalFromRaw, signalFromSketch, trueProbs, versionOf, type StepSignal } from "./attention";

export type Role = "system" | "user" | "assistant";

export interface Message {
  id: string;
  role: Role;
  content: string;
  reasoning?: string;
  runId?: string;
  /** A regenerated answer replaces this one; it stays in the trace but is not sent again. */
  superseded?: boolean;
  createdAt: string;
}

export interface PromptToken {
  position: number;
  id: number | null;
  text: string;
  masked: boolean;
}

export interface OutputToken {
  step: number;
  position: number;
  id: number | null;
  text: string;
  thinkPhase?: ThinkPhase;
  segmentId: string;
}

export interface StepCapture {
  /** Decode step, or null for a prompt-attention query. */
  step: number | null;
  queryPosition: number;
  /** Raw entries of this step, one per captured layer (with per-head capture: the head mean
   * computed from the heads' top-k, flagged by approxFromHeads in runHeadMeans). */
  raw: RawEntry[];
  /** Per-head capture (attention_capture_heads): one raw entry per layer and head, in arrival order. */
  heads: RawEntry[];
  sketch?: SketchEntry;
  fingerprint?: FingerprintEntry;
  moe?: MoeRouting;
  thinkPhase?: ThinkPhase;
}

export type SegmentType = "assistant_think" | "assistant_output";

export interface Segment {
  id: string;
  runId: string;
  type: SegmentType;
  startStep: number;
  endStep: number;
}

export type RunStatus = "streaming" | "done" | "stopped" | "error";

export interface RunMetrics {
  bytesReceived: number;
  attentionBytes: number;
  chunkCount: number;
  /** Milliseconds from request start; null until it happens. */
  firstByteMs: number | null;
  firstTokenMs: number | null;
  /** From the first SSE byte to the first token painted (measured by the chat view). */
  firstRenderMs: number | null;
  durationMs: number | null;
  finishReason: string | null;
  usage: Usage | null;
}

export interface Run {
  id: string;
  messageId: string;
  model: string;
  capture: CaptureSettings;
  sampling: SamplingSettings;
  startedAt: string;
  status: RunStatus;
  error?: string;
  promptTokens: PromptToken[];
  tokens: OutputToken[];
  /** Decode-step captures, indexed by step. */
  steps: Map<number, StepCapture>;
  /** Prompt-attention captures, indexed by query position. */
  promptSteps: Map<number, StepCapture>;
  /** Every entry exactly as received, in arrival order (what export writes). */
  entries: AttentionEntry[];
  segments: Segment[];
  layers: number[];
  metrics: RunMetrics;
  /** Per layer: position -> summed true probability received from decode steps. */
  received: Map<number, Map<number, number>>;
  /** Per layer: how many decode steps carried a raw entry (the denominator for sinks). */
  rawSteps: Map<number, number>;
  /** Wall-clock anchors (performance.now()), not exported. */
  clock: { start: number; firstByte: number | null };
  /** prompt length if known from the prompt tokens, usage, or inferred from entries. */
  promptLen: number | null;
  /** The server's adaptive sampling switch for this run (choices[0].attention_adaptive_sampling). */
  adaptiveSampling: AdaptiveSamplingSwitch | null;
  /** Whether the request had adaptive sampling on, and the server's setting (unknown: undefined). */
  adaptiveConfig?: AdaptiveConfig;
  /** Settings the Router applied to this run ("Apply to next run"), if any. */
  routerApplied?: RouterApplied;
  /** Logit lens entries by decode step (return_logit_lens), layers in arrival order. */
  lens: Map<number, LogitLensEntry[]>;
  /** OpenAI logprobs of each output token, by decode step (logprobs / top_logprobs). */
  logprobs: (LogprobItem | undefined)[];
  /** Head ids seen in per-head capture, sorted. */
  heads: number[];
}

/** Entries this UI derived (the head mean of per-head capture); never exported. */
export const derivedEntries = new WeakSet<RawEntry>();

/** The status to show: a run that ended because it hit max_tokens is "truncated", not "done". */
export function runStatusLabel(run: Pick<Run, "status" | "metrics">): string {
  if (run.status === "done" && run.metrics.finishReason === "length") return "truncated";
  return run.status;
}

/** Adaptive sampling as the run was sent. */
export interface AdaptiveConfig {
  enabled: boolean;
  /** "request": the request's attention_adaptive_sampling field; "server_default": it had none,
   *  so the server's --attention-adaptive-sampling default decided (fingerprint mode only). */
  source: "request" | "server_default" | null;
  /** Consecutive steps in one cluster before the switch (--attention-adaptive-steps), if known. */
  steps: number | null;
}

/** The Router recommendation a run was sent with: the wire record's fields (schema.ts),
 * with the time Apply was clicked (ISO 8601) under the app's camelCase name. */
export type RouterApplied = Omit<RouterAppliedInfo, "applied_at"> & { appliedAt?: string };

export interface RunSummary {
  tokenCount: number;
  tokensPerSec: number | null;
  avgEntropy: number | null;
  dominantZone: Zone | null;
  zoneCounts: Partial<Record<Zone, number>>;
}

/** Mean true probability a position must receive per step (over >= SINK_MIN_STEPS) to count as a sink. */
export const SINK_THRESHOLD = 0.2;
export const SINK_MIN_STEPS = 3;

/**
 * The head mean of one layer from per-head top-k entries: p(j) = mean over heads of p_h(j), with
 * p_h(j) = 0 where j is outside head h's top-k (so it is a lower bound; exact when every head's
 * top-k holds j). Written as a raw entry with logsumexp_candidates 0, so exp(logit) = p.
 */
export function headMean(heads: RawEntry[]): RawEntry {
  const acc = new Map<number, number>();
  let sink = 0;
  let sinkN = 0;
  for (const h of heads) {
    const tp = trueProbs(h);
    h.token_positions.forEach((p, i) => acc.set(p, (acc.get(p) ?? 0) + tp[i] / heads.length));
    if (typeof h.sink_mass === "number") {
      sink += h.sink_mass;
      sinkN += 1;
    }
  }
  const k = Math.max(...heads.map((h) => h.token_positions.length));
  const top = [...acc].sort((a, b) => b[1] - a[1]).slice(0, k);
  const tot = top.reduce((a, [, p]) => a + p, 0) || 1;
  const first = heads[0];
  const e: RawEntry = {
    layer_id: first.layer_id,
    decode_step: first.decode_step,
    query_position: first.query_position,
    token_positions: top.map(([p]) => p),
    attention_scores: top.map(([, p]) => p / tot),
    topk_logits: top.map(([, p]) => Math.log(Math.max(p, 1e-30))),
    logsumexp_candidates: 0,
  };
  if (sinkN) e.sink_mass = sink / sinkN;
  if (first.prompt) e.prompt = true;
  if (first.think_phase) e.think_phase = first.think_phase;
  derivedEntries.add(e);
  return e;
}

let idCounter = 0;
export function newId(prefix: string): string {
  idCounter += 1;
  return `${prefix}-${Date.now().toString(36)}-${idCounter}`;
}

function emptyMetrics(): RunMetrics {
  return {
    bytesReceived: 0,
    attentionBytes: 0,
    chunkCount: 0,
    firstByteMs: null,
    firstTokenMs: null,
    firstRenderMs: null,
    durationMs: null,
    finishReason: null,
    usage: null,
  };
}

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

export class TraceSession {
  traceId: string;
  createdAt: string;
  model: string;
  serverUrl: string;
  messages: Message[] = [];
  runs: Map<string, Run> = new Map();
  /** Bumped on every change; views subscribe and re-read. */
  version = 0;
  private listeners = new Set<() => void>();
  private summaryCache = new Map<string, { key: string; value: RunSummary }>();
  private sinkCache = new Map<string, { n: number; set: ReadonlySet<number> }>();
  private notifyScheduled = false;
  /** Opt-in timing of view updates (render + commit per notification), for measurements. */
  perf: { enabled: boolean; renderMs: number[] } = { enabled: false, renderMs: [] };
  /** When false, notifications are synchronous (tests, import). */
  batchWithAnimationFrame = typeof requestAnimationFrame !== "undefined";

  constructor(opts: { traceId?: string; createdAt?: string; model?: string; serverUrl?: string } = {}) {
    this.traceId = opts.traceId ?? newId("trace");
    this.createdAt = opts.createdAt ?? new Date().toISOString();
    this.model = opts.model ?? "";
    this.serverUrl = opts.serverUrl ?? "";
  }

  // ---- subscription (for React's useSyncExternalStore) ----
  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
  getVersion = (): number => this.version;

  /** Many chunks can arrive in one frame: coalesce their notifications into one render. */
  touch(): void {
    if (!this.batchWithAnimationFrame) {
      this.version += 1;
      this.listeners.forEach((l) => l());
      return;
    }
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    requestAnimationFrame(() => {
      this.notifyScheduled = false;
      this.version += 1;
      const t0 = this.perf.enabled ? now() : 0;
      this.listeners.forEach((l) => l());
      // React flushes these updates in a microtask queued by the listeners; ours runs after it,
      // so the difference is the views' render + commit time for this batch.
      if (this.perf.enabled) queueMicrotask(() => this.perf.renderMs.push(now() - t0));
    });
  }

  // ---- messages and runs ----
  addMessage(role: Role, content: string, opts: Partial<Message> = {}): Message {
    const m: Message = { id: opts.id ?? newId(role), role, content, createdAt: opts.createdAt ?? new Date().toISOString(), ...opts };
    this.messages.push(m);
    this.touch();
    return m;
  }

  /** Messages to send for the next request: everything not superseded, in order. */
  conversation(): { role: Role; content: string }[] {
    return this.messages.filter((m) => !m.superseded).map((m) => ({ role: m.role, content: m.content }));
  }

  startRun(opts: {
    messageId: string;
    model: string;
    capture: CaptureSettings;
    sampling: SamplingSettings;
    id?: string;
    startedAt?: string;
  }): Run {
    const run: Run = {
      id: opts.id ?? newId("run"),
      messageId: opts.messageId,
      model: opts.model,
      capture: opts.capture,
      sampling: opts.sampling,
      startedAt: opts.startedAt ?? new Date().toISOString(),
      status: "streaming",
      promptTokens: [],
      tokens: [],
      steps: new Map(),
      promptSteps: new Map(),
      entries: [],
      segments: [],
      layers: [],
      metrics: emptyMetrics(),
      received: new Map(),
      rawSteps: new Map(),
      clock: { start: now(), firstByte: null },
      promptLen: null,
      adaptiveSampling: null,
      lens: new Map(),
      logprobs: [],
      heads: [],
    };
    this.runs.set(run.id, run);
    const msg = this.messages.find((m) => m.id === opts.messageId);
    if (msg) msg.runId = run.id;
    if (!this.model) this.model = opts.model;
    this.touch();
    return run;
  }

  run(id: string): Run {
    const r = this.runs.get(id);
    if (!r) throw new Error(`unknown run ${id}`);
    return r;
  }

  runForMessage(messageId: string): Run | undefined {
    const m = this.messages.find((x) => x.id === messageId);
    return m?.runId ? this.runs.get(m.runId) : undefined;
  }

  /** The newest run (what the HUD and lens default to). */
  latestRun(): Run | undefined {
    let last: Run | undefined;
    for (const r of this.runs.values()) last = r;
    return last;
  }

  // ---- ingestion ----
  markFirstByte(runId: string): void {
    const run = this.run(runId);
    if (run.clock.firstByte !== null) return;
    run.clock.firstByte = now();
    run.metrics.firstByteMs = run.clock.firstByte - run.clock.start;
  }

  /** Bytes of the response body read so far (the SSE decoder counts them exactly). */
  setBytesReceived(runId: string, bytes: number): void {
    this.run(runId).metrics.bytesReceived = bytes;
  }

  /** One SSE chunk (or a whole non-streaming response, which has the same fields). */
  ingestChunk(runId: string, chunk: ChatChunk): void {
    const run = this.run(runId);
    run.metrics.chunkCount += 1;
    if (chunk.model && !run.model) run.model = chunk.model;
    if (chunk.usage) {
      run.metrics.usage = chunk.usage;
      if (run.promptLen === null) {
        // Without prompt tokens or entries the prompt length is learnt only now: fix positions.
        run.promptLen = chunk.usage.prompt_tokens;
        for (const t of run.tokens) if (t) t.position = run.promptLen + t.step;
      }
    }
    const choice = chunk.choices?.[0];
    if (choice) {
      if (choice.attention_prompt_tokens) this.ingestPromptTokens(runId, choice.attention_prompt_tokens);
      const delta = choice.delta ?? choice.message;
      const deltaPhase: ThinkPhase | undefined = delta?.reasoning_content ? "think" : delta?.content ? "output" : undefined;
      if (choice.attention_tokens?.length) {
        run.metrics.attentionBytes += JSON.stringify(choice.attention_tokens).length;
        this.ingestEntries(runId, choice.attention_tokens);
      }
      const lp = choice.logprobs?.content;
      if (lp?.length) {
        // Steps of this chunk's tokens: the capture's token list when present, else the next ones.
        const steps = choice.attention_output_tokens?.length === lp.length ? choice.attention_output_tokens.map((t) => t.step) : null;
        const base = run.tokens.length;
        lp.forEach((item, i) => (run.logprobs[steps ? steps[i] : base + i] = item));
      }
      if (choice.logit_lens?.length) this.ingestLens(runId, choice.logit_lens);
      if (choice.attention_output_tokens?.length) {
        this.ingestOutputTokens(runId, choice.attention_output_tokens, deltaPhase);
      } else if (delta && (delta.content || delta.reasoning_content)) {
        // No token list (capture off): keep the text as one pseudo-token per chunk.
        const text = (delta.reasoning_content ?? "") + (delta.content ?? "");
        this.ingestOutputTokens(runId, [{ step: run.tokens.length, id: -1, text }], deltaPhase);
      }
      if (delta) this.appendText(run, delta.content ?? "", delta.reasoning_content ?? "");
      if (choice.finish_reason) run.metrics.finishReason = choice.finish_reason;
      if (choice.attention_adaptive_sampling) run.adaptiveSampling = choice.attention_adaptive_sampling;
    }
    this.touch();
  }

  private appendText(run: Run, content: string, reasoning: string): void {
    if (!content && !reasoning) return;
    const msg = this.messages.find((m) => m.id === run.messageId);
    if (!msg) return;
    msg.content += content;
    if (reasoning) msg.reasoning = (msg.reasoning ?? "") + reasoning;
  }

  ingestPromptTokens(runId: string, toks: PromptTokenInfo[]): void {
    const run = this.run(runId);
    for (const t of toks) {
      run.promptTokens[t.position] = { position: t.position, id: t.id ?? null, text: t.text ?? "", masked: !!t.masked };
    }
    run.promptLen = run.promptTokens.length;
    this.touch();
  }

  ingestOutputTokens(runId: string, toks: OutputTokenInfo[], fallbackPhase?: ThinkPhase): void {
    const run = this.run(runId);
    if (run.metrics.firstTokenMs === null && toks.length) run.metrics.firstTokenMs = now() - run.clock.start;
    for (const t of toks) {
      const step = t.step;
      const phase = t.think_phase ?? run.steps.get(step)?.thinkPhase ?? fallbackPhase;
      const seg = this.segmentFor(run, step, phase);
      const tok: OutputToken = {
        step,
        position: (run.promptLen ?? 0) + step,
        id: t.id < 0 ? null : t.id,
        text: t.text,
        thinkPhase: phase,
        segmentId: seg.id,
      };
      run.tokens[step] = tok;
    }
    this.touch();
  }

  /** Extend the current segment or open a new one when the phase changes. */
  private segmentFor(run: Run, step: number, phase: ThinkPhase | undefined): Segment {
    const type: SegmentType = phase === "think" ? "assistant_think" : "assistant_output";
    const last = run.segments[run.segments.length - 1];
    if (last && last.type === type && step >= last.startStep) {
      last.endStep = Math.max(last.endStep, step);
      return last;
    }
    const seg: Segment = {
      id: `${run.id}-${type === "assistant_think" ? "think" : "output"}-${run.segments.length}`,
      runId: run.id,
      type,
      startStep: step,
      endStep: step,
    };
    run.segments.push(seg);
    return seg;
  }

  /** Logit lens entries (a stream chunk's, or a trace's step record's). */
  ingestLens(runId: string, entries: LogitLensEntry[]): void {
    const run = this.run(runId);
    for (const e of entries) {
      const list = run.lens.get(e.decode_step) ?? [];
      const at = list.findIndex((x) => x.layer_id === e.layer_id);
      if (at >= 0) list[at] = e;
      else list.push(e);
      run.lens.set(e.decode_step, list);
    }
    this.touch();
  }

  ingestEntries(runId: string, entries: AttentionEntry[]): void {
    const run = this.run(runId);
    const headTouched = new Map<StepCapture, Set<number>>();
    for (const e of entries) {
      run.entries.push(e);
      const kind = entryKind(e);
      const isPrompt = kind === "raw" && ((e as RawEntry).prompt === true || e.decode_step === null);
      if (!isPrompt && run.promptLen === null && typeof e.decode_step === "number") {
        // query of decode step i sits at prompt_len + i - 1
        run.promptLen = e.query_position - e.decode_step + 1;
      }
      const map = isPrompt ? run.promptSteps : run.steps;
      const key = isPrompt ? e.query_position : (e.decode_step as number);
      let sc = map.get(key);
      if (!sc) {
        sc = { step: isPrompt ? null : key, queryPosition: e.query_position, raw: [], heads: [] };
        map.set(key, sc);
      }
      if (e.think_phase) sc.thinkPhase = e.think_phase;
      if (e.moe_routing) sc.moe = { ...(sc.moe ?? {}), ...e.moe_routing };
      if (kind === "raw" && typeof (e as RawEntry).head_id === "number") {
        // Per-head capture: keep the heads; the layer's head mean is rebuilt once the batch is in.
        const r = e as RawEntry;
        sc.heads.push(r);
        if (!run.heads.includes(r.head_id!)) run.heads = [...run.heads, r.head_id!].sort((a, b) => a - b);
        if (!run.layers.includes(r.layer_id)) run.layers = [...run.layers, r.layer_id].sort((a, b) => a - b);
        const set = headTouched.get(sc) ?? new Set<number>();
        set.add(r.layer_id);
        headTouched.set(sc, set);
      } else if (kind === "raw") {
        const r = e as RawEntry;
        sc.raw.push(r);
        if (!run.layers.includes(r.layer_id)) run.layers = [...run.layers, r.layer_id].sort((a, b) => a - b);
        if (!isPrompt) this.accumulateReceived(run, r);
      } else if (kind === "sketch") {
        sc.sketch = e as SketchEntry;
        for (const l of Object.keys((e as SketchEntry).layer_sketches)) {
          const id = Number(l);
          if (!run.layers.includes(id)) run.layers = [...run.layers, id].sort((a, b) => a - b);
        }
      } else {
        sc.fingerprint = e as FingerprintEntry;
      }
    }
    for (const [sc, layers] of headTouched) {
      const isPrompt = sc.step === null;
      for (const layer of layers) {
        const mean = headMean(sc.heads.filter((h) => h.layer_id === layer));
        const at = sc.raw.findIndex((r) => r.layer_id === layer);
        if (at >= 0) {
          if (!derivedEntries.has(sc.raw[at])) continue; // the server sent a real mean too: keep it
          if (!isPrompt) this.accumulateReceived(run, sc.raw[at], -1);
          sc.raw[at] = mean;
        } else sc.raw.push(mean);
        if (!isPrompt) this.accumulateReceived(run, mean);
      }
    }
    this.touch();
  }

  private accumulateReceived(run: Run, e: RawEntry, sign = 1): void {
    let m = run.received.get(e.layer_id);
    if (!m) {
      m = new Map();
      run.received.set(e.layer_id, m);
    }
    const tp = trueProbs(e);
    e.token_positions.forEach((p, i) => m!.set(p, (m!.get(p) ?? 0) + sign * tp[i]));
    run.rawSteps.set(e.layer_id, (run.rawSteps.get(e.layer_id) ?? 0) + sign);
  }

  finishRun(runId: string, status: RunStatus, error?: string): void {
    const run = this.run(runId);
    run.status = status;
    if (error) run.error = error;
    run.metrics.durationMs = now() - run.clock.start;
    this.touch();
  }

  // ---- derived views ----
  /** Steps of a run that carry raw entries, for the given layer. */
  rawEntry(run: Run, step: number, layer: number): RawEntry | undefined {
    return run.steps.get(step)?.raw.find((r) => r.layer_id === layer);
  }

  /** The first token and any position receiving >= SINK_THRESHOLD mean true probability per step. */
  sinks(run: Run, layer: number): ReadonlySet<number> {
    const nSteps = run.rawSteps.get(layer) ?? 0;
    // Cached per (run, layer) until a new step arrives: views ask for every row and frame.
    const key = `${run.id}:${layer}`;
    const hit = this.sinkCache.get(key);
    if (hit && hit.n === nSteps) return hit.set;
    const out = new Set<number>([0]);
    const m = run.received.get(layer);
    if (m && nSteps >= SINK_MIN_STEPS) for (const [p, sum] of m) if (sum / nSteps >= SINK_THRESHOLD) out.add(p);
    this.sinkCache.set(key, { n: nSteps, set: out });
    return out;
  }

  /** Prompt or output token at a position. */
  tokenAt(run: Run, position: number): { kind: "prompt"; token: PromptToken } | { kind: "output"; token: OutputToken } | null {
    const pl = run.promptLen ?? run.promptTokens.length;
    if (position < pl) {
      const t = run.promptTokens[position];
      return t ? { kind: "prompt", token: t } : null;
    }
    const t = run.tokens[position - pl];
    return t ? { kind: "output", token: t } : null;
  }

  /**
   * The signal (fingerprint + zone input) of one step, from whatever capture it has, with the
   * fingerprint version it follows (classify it with classify(sig.fingerprint, sig.version)):
   * a server fingerprint: the entry's fingerprint_version (absent: 1); a sketch: 2 when it says
   * fingerprint_version 2 and every layer has sink_mass (the sink is then taken out of the
   * histogram); raw entries: 2 when they say fingerprint_version 2 (position 0 is then dropped and
   * the rest renormalized). Entries without a version read as before (version 1).
   */
  stepSignal(run: Run, step: number, excludeSinks = false): StepSignal | null {
    const sc = run.steps.get(step);
    if (!sc) return null;
    if (sc.fingerprint) {
      const f = sc.fingerprint.fingerprint;
      return { fingerprint: f, source: "server", version: versionOf(sc.fingerprint.fingerprint_version), entropy: null, massCaptured: null, hist: f.slice(4) };
    }
    if (sc.sketch) return signalFromSketch(sc.sketch);
    // Raw top-k estimate: "exclude sinks" drops the run's sink positions of each layer and renormalizes
    // (on top of the version-2 reading, which always leaves position 0 out).
    if (excludeSinks && sc.raw.length) {
      const drop = new Set<number>();
      for (const r of sc.raw) for (const p of this.sinks(run, r.layer_id)) drop.add(p);
      return signalFromRaw(sc.raw, drop);
    }
    return signalFromRaw(sc.raw);
  }

  /** Token count and tokens/s: cheap, for the HUD on every frame. */
  rates(run: Run): { tokenCount: number; tokensPerSec: number | null } {
    const tokenCount = run.tokens.length ? run.tokens.reduce((n, t) => (t ? n + 1 : n), 0) : 0;
    const dur = run.metrics.durationMs ?? (run.status === "streaming" ? now() - run.clock.start : null);
    const genMs = dur !== null && run.metrics.firstTokenMs !== null ? dur - run.metrics.firstTokenMs : null;
    return { tokenCount, tokensPerSec: genMs && genMs > 0 && tokenCount > 1 ? ((tokenCount - 1) * 1000) / genMs : null };
  }

  /** Zone counts and mean entropy over all steps (cached until the run gets new entries). */
  summary(run: Run): RunSummary {
    const key = `${run.entries.length}:${run.tokens.length}:${run.status}:${run.metrics.durationMs}`;
    const cached = this.summaryCache.get(run.id);
    if (cached && cached.key === key) return cached.value;
    const zoneCounts: Partial<Record<Zone, number>> = {};
    let entSum = 0;
    let entN = 0;
    for (const [step, sc] of run.steps) {
      const sig = this.stepSignal(run, step);
      if (!sig) continue;
      let zone: Zone;
      if (sc.fingerprint && (ZONES as readonly string[]).includes(sc.fingerprint.manifold)) zone = sc.fingerprint.manifold as Zone;
      else zone = classify(sig.fingerprint, sig.version).zone;
      zoneCounts[zone] = (zoneCounts[zone] ?? 0) + 1;
      entSum += sig.fingerprint[3];
      entN += 1;
    }
    let dominant: Zone | null = null;
    for (const z of ZONES) if ((zoneCounts[z] ?? 0) > (dominant ? zoneCounts[dominant] ?? 0 : 0)) dominant = z;
    const value: RunSummary = {
      ...this.rates(run),
      avgEntropy: entN ? entSum / entN : null,
      dominantZone: dominant,
      zoneCounts,
    };
    this.summaryCache.set(run.id, { key, value });
    return value;
  }
}
