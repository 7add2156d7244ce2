import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { exportRecords, exportTrace, importTrace, parseTrace, TraceImportError } from "../src/trace/jsonl";
import { TRACE_SCHEMA_VERSION } from "../src/trace/schema";
import type { TraceSession } from "../src/trace/session";
import { loadFixture, replay } from "./helpers";

/** Everything a view reads from a session, in plain data (runs' Maps turned to arrays). */
function viewData(s: TraceSession) {
  return {
    traceId: s.traceId,
    model: s.model,
    messages: s.messages,
    runs: [...s.runs.values()].map((r) => ({
      id: r.id,
      status: r.status,
      capture: r.capture,
      promptLen: r.promptLen,
      promptTokens: r.promptTokens,
      tokens: r.tokens,
      steps: [...r.steps.entries()],
      promptSteps: [...r.promptSteps.entries()],
      segments: r.segments,
      layers: r.layers,
      metrics: r.metrics,
      adaptiveSampling: r.adaptiveSampling,
      adaptiveConfig: r.adaptiveConfig,
      routerApplied: r.routerApplied,
      sinks29: [...s.sinks(r, 29)],
      summary: s.summary(r),
      signal3: s.stepSignal(r, 3),
    })),
  };
}

describe("trace JSONL", () => {
  for (const name of ["chat_raw_think.json", "chat_sketch_moe.json", "chat_fingerprint.json"]) {
    it(`${name}: export -> import gives the same session, and the same JSONL again`, () => {
      const { session } = replay(loadFixture(name));
      const text = exportTrace(session);
      const back = importTrace(text);
      expect(viewData(back)).toEqual(viewData(session));
      expect(exportTrace(back)).toBe(text);
    });
  }

  it("writes the versioned record types in order", () => {
    const { session } = replay(loadFixture("chat_raw_think.json"));
    const recs = exportRecords(session);
    expect(recs[0]).toMatchObject({ record_type: "header", version: TRACE_SCHEMA_VERSION });
    const types = recs.map((r) => r.record_type);
    expect(types.filter((t) => t === "message")).toHaveLength(2);
    expect(types.filter((t) => t === "token")).toHaveLength(6 + 6);
    expect(types.filter((t) => t === "step")).toHaveLength(6 + 2);
    expect(types.filter((t) => t === "segment")).toHaveLength(2);
    expect(types[types.length - 1]).toBe("metrics");
    const metrics = recs[recs.length - 1] as { dominant_zone: string; token_count: number };
    expect(metrics.token_count).toBe(6);
    expect(typeof metrics.dominant_zone).toBe("string");
  });

  it("holds several runs (a regenerated answer) in one trace", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const first = session.messages.find((m) => m.runId === runId)!;
    first.superseded = true;
    const second = replay(loadFixture("chat_fingerprint.json"));
    const m2 = second.session.messages[1];
    const run2 = second.session.run(second.runId);
    session.messages.push(m2);
    session.runs.set(run2.id, run2);
    const back = importTrace(exportTrace(session));
    expect(back.runs.size).toBe(2);
    expect(back.messages.filter((m) => m.superseded)).toHaveLength(1);
    expect(back.conversation().map((m) => m.role)).toEqual(["user", "assistant"]);
  });

  it("rejects malformed files with line numbers and builds nothing", () => {
    const { session } = replay(loadFixture("chat_raw_think.json"));
    const lines = exportTrace(session).trim().split("\n");
    const broken = [...lines];
    broken[3] = broken[3].slice(0, 20); // truncated JSON
    broken[5] = JSON.stringify({ ...JSON.parse(lines[5]), run_id: "nope" });
    broken.push(JSON.stringify({ record_type: "banana" }));
    let err: unknown;
    try {
      importTrace(broken.join("\n"));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TraceImportError);
    const errors = (err as TraceImportError).errors;
    expect(errors[0]).toMatch(/^line 4: not valid JSON/);
    expect(errors[1]).toMatch(/^line 6: run_id "nope" is not declared/);
    expect(errors[2]).toMatch(/unknown record_type "banana"/);
  });

  it("names bad fields inside step entries", () => {
    const { session } = replay(loadFixture("chat_raw_think.json"));
    const lines = exportTrace(session).trim().split("\n");
    const i = lines.findIndex((l) => l.includes('"record_type":"step"'));
    const rec = JSON.parse(lines[i]);
    rec.entries[0].topk_logits = rec.entries[0].topk_logits.slice(1);
    lines[i] = JSON.stringify(rec);
    expect(() => parseTrace(lines.join("\n"))).toThrow(/must have the same length/);
  });

  it("requires a header first and a supported major version", () => {
    expect(() => parseTrace('{"record_type":"message","id":"a","role":"user","content":"x"}')).toThrow(/first record must be the header/);
    expect(() => parseTrace('{"record_type":"header","version":"2.0","trace_id":"t"}')).toThrow(/unsupported trace version "2.0"/);
    expect(() => parseTrace("")).toThrow(/no header/);
    expect(() => parseTrace("[1,2]")).toThrow(/JSON object/);
    expect(parseTrace('{"record_type":"header","version":"1.3","trace_id":"t","future_field":1}')).toHaveLength(1);
  });

  it("1.1 run fields: adaptive sampling and the applied Router recommendation survive export -> import", () => {
    const { session, runId } = replay(loadFixture("chat_fingerprint.json"));
    const run = session.run(runId);
    run.adaptiveConfig = { enabled: true, source: "request", steps: 8 };
    // the server's switch as it arrives on a chunk
    session.ingestChunk(runId, {
      choices: [
        {
          index: 0,
          delta: {},
          attention_adaptive_sampling: { step: 9, before: { temperature: 0.7, top_p: 0.95 }, after: { temperature: 0.3, top_p: 0.9 }, cluster_id: 2, zone: "syntax_floor" },
        },
      ],
    });
    run.routerApplied = { zone: "syntax_floor", confidence: 0.82, temperature: 0.3, top_p: 0.9, capture_mode: "fingerprint", basis: "run-1, last 16 steps", appliedAt: "2026-01-01T00:00:00.000Z" };
    const text = exportTrace(session);
    const lines = text.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines[0].version).toBe(TRACE_SCHEMA_VERSION);
    const runRec = lines.find((l) => l.record_type === "message" && l.run).run;
    expect(runRec.adaptive_sampling).toEqual({
      enabled: true,
      source: "request",
      steps: 8,
      switch: { step: 9, before: { temperature: 0.7, top_p: 0.95 }, after: { temperature: 0.3, top_p: 0.9 }, cluster_id: 2, zone: "syntax_floor" },
    });
    expect(runRec.router_applied).toEqual({
      zone: "syntax_floor",
      confidence: 0.82,
      temperature: 0.3,
      top_p: 0.9,
      capture_mode: "fingerprint",
      basis: "run-1, last 16 steps",
      applied_at: "2026-01-01T00:00:00.000Z",
    });
    const back = importTrace(text);
    const r2 = back.run(runId);
    expect(r2.adaptiveConfig).toEqual(run.adaptiveConfig);
    expect(r2.adaptiveSampling).toEqual(run.adaptiveSampling);
    expect(r2.routerApplied).toEqual(run.routerApplied);
    expect(viewData(back)).toEqual(viewData(session));
    expect(exportTrace(back)).toBe(text);
  });

  it("1.1 run fields: adaptive sampling off, a switch without a known request, a recommendation without confidence", () => {
    const a = replay(loadFixture("chat_raw_think.json"));
    a.session.run(a.runId).adaptiveConfig = { enabled: false, source: "server_default", steps: null };
    const b = replay(loadFixture("chat_fingerprint.json"));
    const sw = { step: 1, before: { temperature: 1 }, after: { temperature: 0.5 }, cluster_id: 0, zone: "diffuse" };
    b.session.run(b.runId).adaptiveSampling = sw;
    b.session.run(b.runId).routerApplied = { zone: "diffuse", confidence: null, temperature: 0.9, top_p: 0.98, capture_mode: "fingerprint" };
    const ra = JSON.parse(exportTrace(a.session).split("\n")[2]).run;
    expect(ra.adaptive_sampling).toEqual({ enabled: false, source: "server_default", steps: null, switch: null });
    expect(ra.router_applied).toBeUndefined();
    const tb = exportTrace(b.session);
    const rb = JSON.parse(tb.split("\n")[2]).run;
    expect(rb.adaptive_sampling).toEqual({ enabled: true, source: null, steps: null, switch: sw });
    expect(rb.router_applied).toEqual({ zone: "diffuse", confidence: null, temperature: 0.9, top_p: 0.98, capture_mode: "fingerprint" });
    const back = importTrace(tb).run(b.runId);
    expect(back.adaptiveSampling).toEqual(sw);
    expect(back.routerApplied).toEqual(b.session.run(b.runId).routerApplied);
    expect(exportTrace(importTrace(tb))).toBe(tb);
    // a run with neither writes neither (the 1.0 shape)
    const c = replay(loadFixture("chat_sketch_moe.json"));
    const rc = JSON.parse(exportTrace(c.session).split("\n")[2]).run;
    expect("adaptive_sampling" in rc || "router_applied" in rc).toBe(false);
  });

  it("a 1.0 trace (written before these fields) still imports, and re-exports as 1.1 with nothing else changed", () => {
    const old = readFileSync(join(__dirname, "fixtures", "trace_v1_0.jsonl"), "utf8");
    expect(JSON.parse(old.split("\n")[0]).version).toBe("1.0");
    const s = importTrace(old);
    const run = s.latestRun()!;
    expect(run.adaptiveSampling).toBeNull();
    expect(run.adaptiveConfig).toBeUndefined();
    expect(run.routerApplied).toBeUndefined();
    expect(s.messages.map((m) => m.content)).toEqual(["Café?", "Yes."]);
    expect(run.steps.size).toBe(loadFixture("chat_fingerprint.json").expect.steps);
    expect(exportTrace(s)).toBe(old.replace('"version":"1.0"', `"version":"${TRACE_SCHEMA_VERSION}"`));
  });

  it("names a bad 1.1 run field", () => {
    const { session, runId } = replay(loadFixture("chat_fingerprint.json"));
    session.run(runId).adaptiveConfig = { enabled: true, source: "request", steps: 8 };
    session.run(runId).routerApplied = { zone: "diffuse", confidence: 0.5, temperature: 0.9, top_p: 0.98, capture_mode: "fingerprint" };
    const lines = exportTrace(session).trim().split("\n");
    const mutate = (f: (run: Record<string, Record<string, unknown>>) => void) => {
      const rec = JSON.parse(lines[2]);
      f(rec.run);
      return [lines[0], lines[1], JSON.stringify(rec), ...lines.slice(3)].join("\n");
    };
    expect(() => parseTrace(mutate((r) => (r.adaptive_sampling.enabled = "yes" as unknown as Record<string, unknown>)))).toThrow(
      /line 3: message record: field "run.adaptive_sampling.enabled" must be true or false/,
    );
    expect(() => parseTrace(mutate((r) => (r.adaptive_sampling.switch = { step: "x" })))).toThrow(/"run.adaptive_sampling.switch"/);
    expect(() => parseTrace(mutate((r) => (r.router_applied.top_p = "high" as unknown as Record<string, unknown>)))).toThrow(/"run.router_applied.top_p" must be a number/);
    expect(() => parseTrace(mutate((r) => (r.router_applied = [] as unknown as Record<string, unknown>)))).toThrow(/"run.router_applied" must be an object/);
  });
});
