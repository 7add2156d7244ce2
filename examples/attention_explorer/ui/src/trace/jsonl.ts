// Export a TraceSession to JSONL (schema.ts) and import it back.
// Import validates every line first and builds a brand-new session only when the whole
// file is valid: a bad file never touches what is already loaded.
import { validateEntry } from "../api/wire";
import type { AdaptiveSamplingSwitch } from "../api/wire";
import type {
  AdaptiveSamplingInfo,
  HeaderRecord,
  MessageRecord,
  MetricsRecord,
  RouterAppliedInfo,
  SegmentRecord,
  StepRecord,
  TokenRecord,
  TraceRecord,
} from "./schema";
import { RECORD_TYPES, TRACE_SCHEMA_MAJOR, TRACE_SCHEMA_VERSION } from "./schema";
import { TraceSession, type Run, type RouterApplied, type StepCapture } from "./session";

export function exportRecords(s: TraceSession): TraceRecord[] {
  const out: TraceRecord[] = [];
  const header: HeaderRecord = {
    record_type: "header",
    version: TRACE_SCHEMA_VERSION,
    trace_id: s.traceId,
    created_at: s.createdAt,
    model: s.model,
    generator: "attention-explorer-ui",
  };
  if (s.serverUrl) header.server_url = s.serverUrl;
  out.push(header);
  for (const m of s.messages) {
    const rec: MessageRecord = { record_type: "message", id: m.id, role: m.role, content: m.content, created_at: m.createdAt };
    if (m.reasoning) rec.reasoning_content = m.reasoning;
    if (m.superseded) rec.superseded = true;
    const run = m.runId ? s.runs.get(m.runId) : undefined;
    if (run) {
      rec.run = {
        id: run.id,
        model: run.model,
        status: run.status,
        started_at: run.startedAt,
        capture: run.capture,
        sampling: run.sampling,
        prompt_len: run.promptLen,
      };
      if (run.error) rec.run.error = run.error;
      const adaptive = adaptiveInfo(run);
      if (adaptive) rec.run.adaptive_sampling = adaptive;
      if (run.routerApplied) rec.run.router_applied = routerInfo(run.routerApplied);
    }
    out.push(rec);
    if (run) out.push(...runRecords(s, run));
  }
  return out;
}

/** 1.1 run.adaptive_sampling: what the request asked for and the server's switch, when known. */
function adaptiveInfo(run: Run): AdaptiveSamplingInfo | undefined {
  const cfg = run.adaptiveConfig;
  if (!cfg && !run.adaptiveSampling) return undefined;
  return {
    // a switch only happens when adaptive sampling was on
    enabled: cfg ? cfg.enabled : true,
    source: cfg ? cfg.source : null,
    steps: cfg ? cfg.steps : null,
    switch: run.adaptiveSampling,
  };
}

function routerInfo(a: RouterApplied): RouterAppliedInfo {
  const out: RouterAppliedInfo = {
    zone: a.zone,
    confidence: a.confidence ?? null,
    temperature: a.temperature,
    top_p: a.top_p,
    capture_mode: a.capture_mode,
  };
  if (a.basis !== undefined) out.basis = a.basis;
  if (a.appliedAt !== undefined) out.applied_at = a.appliedAt;
  return out;
}

function runRecords(s: TraceSession, run: Run): TraceRecord[] {
  const out: TraceRecord[] = [];
  for (const t of run.promptTokens) {
    if (!t) continue;
    const rec: TokenRecord = {
      record_type: "token",
      run_id: run.id,
      index: t.position,
      kind: "prompt",
      step: null,
      token_id: t.id,
      text: t.text,
    };
    if (t.masked) rec.masked = true;
    out.push(rec);
  }
  for (const t of run.tokens) {
    if (!t) continue;
    const rec: TokenRecord = {
      record_type: "token",
      run_id: run.id,
      index: t.position,
      kind: "output",
      step: t.step,
      token_id: t.id,
      text: t.text,
      segment_id: t.segmentId,
    };
    if (t.thinkPhase) rec.think_phase = t.thinkPhase;
    const lp = run.logprobs[t.step];
    if (lp) rec.logprobs = lp;
    out.push(rec);
  }
  // Steps in the order they first arrived, each with its entries verbatim.
  const seen = new Set<StepCapture>();
  for (const e of run.entries) {
    const isPrompt = "layer_id" in e && (e.prompt === true || e.decode_step === null);
    const sc = isPrompt ? run.promptSteps.get(e.query_position) : run.steps.get(e.decode_step as number);
    if (!sc || seen.has(sc)) continue;
    seen.add(sc);
    const entries = run.entries.filter((x) =>
      isPrompt
        ? "layer_id" in x && (x.prompt === true || x.decode_step === null) && x.query_position === sc.queryPosition
        : x.decode_step === sc.step && !("prompt" in x && x.prompt === true),
    );
    const rec: StepRecord = {
      record_type: "step",
      run_id: run.id,
      step: sc.step,
      token_index: sc.step === null ? sc.queryPosition : (run.promptLen ?? 0) + sc.step,
      entries,
    };
    const lens = sc.step === null ? undefined : run.lens.get(sc.step);
    if (lens?.length) rec.logit_lens = lens;
    out.push(rec);
  }
  // Lens readings of steps without attention entries (none in practice: the lens rides on capture).
  const stepped = new Set([...seen].map((sc) => sc.step));
  for (const [step, lens] of [...run.lens].sort((a, b) => a[0] - b[0])) {
    if (stepped.has(step) || !lens.length) continue;
    out.push({ record_type: "step", run_id: run.id, step, token_index: (run.promptLen ?? 0) + step, entries: [], logit_lens: lens });
  }
  for (const g of run.segments) {
    const rec: SegmentRecord = {
      record_type: "segment",
      run_id: run.id,
      id: g.id,
      type: g.type,
      start_step: g.startStep,
      end_step: g.endStep,
    };
    out.push(rec);
  }
  const sum = s.summary(run);
  const m = run.metrics;
  const rec: MetricsRecord = {
    record_type: "metrics",
    run_id: run.id,
    capture_mode: run.capture.mode,
    token_count: sum.tokenCount,
    prompt_tokens: run.promptLen,
    bytes_received: m.bytesReceived,
    attention_bytes: m.attentionBytes,
    chunk_count: m.chunkCount,
    first_byte_ms: m.firstByteMs,
    first_token_ms: m.firstTokenMs,
    first_render_ms: m.firstRenderMs,
    duration_ms: m.durationMs,
    tokens_per_sec: sum.tokensPerSec,
    finish_reason: m.finishReason,
    usage: m.usage,
    avg_entropy: sum.avgEntropy,
    dominant_zone: sum.dominantZone,
    zone_counts: sum.zoneCounts as Record<string, number>,
  };
  out.push(rec);
  return out;
}

export function exportTrace(s: TraceSession): string {
  return exportRecords(s).map((r) => JSON.stringify(r)).join("\n") + "\n";
}

export class TraceImportError extends Error {
  constructor(public errors: string[]) {
    super(
      `Trace not imported: ${errors.length} problem${errors.length === 1 ? "" : "s"}:\n` +
        errors.slice(0, 10).join("\n") +
        (errors.length > 10 ? `\n... and ${errors.length - 10} more` : ""),
    );
    this.name = "TraceImportError";
  }
}

type Obj = Record<string, unknown>;
const isStr = (v: unknown) => typeof v === "string";
const isNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);
const isNumOrNull = (v: unknown) => v === null || isNum(v);
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const isOptStr = (v: unknown) => v === undefined || isStr(v);

/** The 1.1 run fields (optional); a problem naming the field, or null. */
function checkRunExtras(run: Obj): string | null {
  const bad = (field: string, what: string) => `message record: field "run.${field}" must be ${what}`;
  const a = run.adaptive_sampling;
  if (a !== undefined) {
    if (!isObj(a)) return bad("adaptive_sampling", "an object");
    if (typeof a.enabled !== "boolean") return bad("adaptive_sampling.enabled", "true or false");
    if (!(a.source === undefined || a.source === null || a.source === "request" || a.source === "server_default")) {
      return bad("adaptive_sampling.source", '"request", "server_default" or null');
    }
    if (!(a.steps === undefined || isNumOrNull(a.steps))) return bad("adaptive_sampling.steps", "a number or null");
    const sw = a.switch;
    if (!(sw === undefined || sw === null || (isObj(sw) && isNum(sw.step) && isObj(sw.before) && isObj(sw.after)))) {
      return bad("adaptive_sampling.switch", "null or an object with step, before and after");
    }
  }
  const r = run.router_applied;
  if (r !== undefined) {
    if (!isObj(r)) return bad("router_applied", "an object");
    if (!isStr(r.zone)) return bad("router_applied.zone", "a string");
    if (!(r.confidence === undefined || isNumOrNull(r.confidence))) return bad("router_applied.confidence", "a number or null");
    if (!isNum(r.temperature)) return bad("router_applied.temperature", "a number");
    if (!isNum(r.top_p)) return bad("router_applied.top_p", "a number");
    if (!isStr(r.capture_mode)) return bad("router_applied.capture_mode", "a string");
    if (!isOptStr(r.basis)) return bad("router_applied.basis", "a string");
    if (!isOptStr(r.applied_at)) return bad("router_applied.applied_at", "a string");
  }
  return null;
}

/** Returns a problem with one record (naming the field), or null when it is well formed. */
function checkRecord(r: Obj, runs: Set<string>): string | null {
  const need = (field: string, ok: (v: unknown) => boolean, what: string) =>
    ok(r[field]) ? null : `${r.record_type} record: field "${field}" must be ${what}`;
  const needRun = () =>
    need("run_id", isStr, "a string") ??
    (runs.has(r.run_id as string) ? null : `run_id "${r.run_id}" is not declared by an earlier message record`);
  switch (r.record_type) {
    case "header": {
      const p = need("version", isStr, "a string") ?? need("trace_id", isStr, "a string");
      if (p) return p;
      const major = Number(String(r.version).split(".")[0]);
      if (major !== TRACE_SCHEMA_MAJOR) {
        return `unsupported trace version "${r.version}" (this dashboard reads ${TRACE_SCHEMA_MAJOR}.x)`;
      }
      return null;
    }
    case "message": {
      const p =
        need("id", isStr, "a string") ??
        need("role", (v) => v === "system" || v === "user" || v === "assistant", '"system", "user" or "assistant"') ??
        need("content", isStr, "a string");
      if (p) return p;
      if (r.run !== undefined) {
        const run = r.run as Obj;
        if (typeof run !== "object" || run === null || !isStr(run.id)) return 'message record: field "run.id" must be a string';
        if (typeof run.capture !== "object" || run.capture === null) return 'message record: field "run.capture" must be an object';
        const extra = checkRunExtras(run);
        if (extra) return extra;
        if (runs.has(run.id as string)) return `run id "${run.id}" is declared twice`;
        runs.add(run.id as string);
      }
      return null;
    }
    case "token":
      return (
        needRun() ??
        need("index", (v) => Number.isInteger(v) && (v as number) >= 0, "an integer >= 0") ??
        need("kind", (v) => v === "prompt" || v === "output", '"prompt" or "output"') ??
        need("text", isStr, "a string") ??
        (r.kind === "output" ? need("step", (v) => Number.isInteger(v) && (v as number) >= 0, "an integer >= 0") : null) ??
        (r.logprobs === undefined || (isObj(r.logprobs) && isNum((r.logprobs as Obj).logprob)) ? null : 'token record: field "logprobs" must be an object with a numeric logprob')
      );
    case "step": {
      const p =
        needRun() ??
        need("step", isNumOrNull, "a number or null") ??
        need("entries", Array.isArray, "an array");
      if (p) return p;
      const entries = r.entries as unknown[];
      for (let i = 0; i < entries.length; i++) {
        const bad = validateEntry(entries[i]);
        if (bad) return `step record: entries[${i}]: ${bad}`;
      }
      const lens = r.logit_lens;
      if (lens !== undefined) {
        if (!Array.isArray(lens)) return 'step record: field "logit_lens" must be an array';
        for (let i = 0; i < lens.length; i++) {
          const l = lens[i] as Obj;
          if (!isObj(l) || !isNum(l.decode_step) || !isNum(l.layer_id) || !Array.isArray(l.top_tokens)) {
            return `step record: logit_lens[${i}] must have decode_step, layer_id and top_tokens`;
          }
        }
      }
      return null;
    }
    case "segment":
      return (
        needRun() ??
        need("id", isStr, "a string") ??
        need("type", (v) => v === "assistant_think" || v === "assistant_output", '"assistant_think" or "assistant_output"') ??
        need("start_step", isNum, "a number") ??
        need("end_step", isNum, "a number")
      );
    case "metrics":
      return needRun();
    default:
      return `unknown record_type ${JSON.stringify(r.record_type)} (expected one of ${RECORD_TYPES.join(", ")})`;
  }
}

/** Parse and validate JSONL text; throws TraceImportError listing every bad line. */
export function parseTrace(text: string): TraceRecord[] {
  const errors: string[] = [];
  const records: TraceRecord[] = [];
  const runs = new Set<string>();
  const lines = text.split(/\r?\n/);
  let sawHeader = false;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `line ${i + 1}`;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch (e) {
      errors.push(`${where}: not valid JSON (${(e as Error).message})`);
      return;
    }
    if (typeof r !== "object" || r === null || Array.isArray(r)) {
      errors.push(`${where}: a record must be a JSON object`);
      return;
    }
    const o = r as Obj;
    if (!sawHeader && o.record_type !== "header") {
      errors.push(`${where}: the first record must be the header (record_type "header")`);
      sawHeader = true; // report once
      return;
    }
    if (o.record_type === "header") {
      if (records.some((x) => x.record_type === "header")) {
        errors.push(`${where}: a second header record`);
        return;
      }
      sawHeader = true;
    }
    const bad = checkRecord(o, runs);
    if (bad) errors.push(`${where}: ${bad}`);
    else records.push(o as unknown as TraceRecord);
  });
  if (!records.some((r) => r.record_type === "header") && !errors.length) errors.push("the file has no header record (is it empty?)");
  if (errors.length) throw new TraceImportError(errors);
  return records;
}

/** Build a new session from JSONL text, replaying it through the live ingestion code. */
export function importTrace(text: string): TraceSession {
  const records = parseTrace(text);
  const header = records[0] as HeaderRecord;
  const s = new TraceSession({
    traceId: header.trace_id,
    createdAt: header.created_at,
    model: header.model,
    serverUrl: header.server_url,
  });
  s.batchWithAnimationFrame = false;
  const segs = new Map<string, SegmentRecord[]>();
  for (const r of records) {
    switch (r.record_type) {
      case "message": {
        const m = s.addMessage(r.role, r.content, { id: r.id, createdAt: r.created_at });
        if (r.reasoning_content) m.reasoning = r.reasoning_content;
        if (r.superseded) m.superseded = true;
        if (r.run) {
          const run = s.startRun({
            id: r.run.id,
            messageId: r.id,
            model: r.run.model,
            capture: r.run.capture,
            sampling: r.run.sampling,
            startedAt: r.run.started_at,
          });
          run.status = r.run.status;
          if (r.run.error) run.error = r.run.error;
          run.promptLen = r.run.prompt_len;
          const a = r.run.adaptive_sampling;
          if (a) {
            run.adaptiveConfig = { enabled: a.enabled, source: a.source ?? null, steps: a.steps ?? null };
            run.adaptiveSampling = (a.switch ?? null) as AdaptiveSamplingSwitch | null;
          }
          const ra = r.run.router_applied;
          if (ra) {
            run.routerApplied = { zone: ra.zone, confidence: ra.confidence ?? null, temperature: ra.temperature, top_p: ra.top_p, capture_mode: ra.capture_mode };
            if (ra.basis !== undefined) run.routerApplied.basis = ra.basis;
            if (ra.applied_at !== undefined) run.routerApplied.appliedAt = ra.applied_at;
          }
        }
        break;
      }
      case "token": {
        if (r.kind === "prompt") {
          s.ingestPromptTokens(r.run_id, [{ position: r.index, id: r.token_id, text: r.text, masked: !!r.masked }]);
        } else {
          s.ingestOutputTokens(r.run_id, [{ step: r.step as number, id: r.token_id ?? -1, text: r.text, think_phase: r.think_phase }]);
          const tok = s.run(r.run_id).tokens[r.step as number];
          if (r.segment_id) tok.segmentId = r.segment_id;
          if (r.logprobs) s.run(r.run_id).logprobs[r.step as number] = r.logprobs;
        }
        break;
      }
      case "step":
        if (r.entries.length) s.ingestEntries(r.run_id, r.entries);
        if (r.logit_lens?.length) s.ingestLens(r.run_id, r.logit_lens);
        break;
      case "segment":
        segs.set(r.run_id, [...(segs.get(r.run_id) ?? []), r]);
        break;
      case "metrics": {
        const m = s.run(r.run_id).metrics;
        m.bytesReceived = r.bytes_received ?? 0;
        m.attentionBytes = r.attention_bytes ?? 0;
        m.chunkCount = r.chunk_count ?? 0;
        m.firstByteMs = r.first_byte_ms ?? null;
        m.firstTokenMs = r.first_token_ms ?? null;
        m.firstRenderMs = r.first_render_ms ?? null;
        m.durationMs = r.duration_ms ?? null;
        m.finishReason = r.finish_reason ?? null;
        m.usage = r.usage ?? null;
        break;
      }
    }
  }
  // Segment records are authoritative (ids and bounds exactly as exported).
  for (const [runId, list] of segs) {
    s.run(runId).segments = list.map((g) => ({ id: g.id, runId, type: g.type, startStep: g.start_step, endStep: g.end_step }));
  }
  for (const run of s.runs.values()) if (run.status === "streaming") run.status = "stopped";
  s.batchWithAnimationFrame = typeof requestAnimationFrame !== "undefined";
  return s;
}
