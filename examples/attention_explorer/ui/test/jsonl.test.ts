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
});
