// Shared test helpers: load a recorded SSE fixture and replay it into a TraceSession
// through the same decoder and ingestion code the live chat uses.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SseDecoder, type SseItem } from "../src/api/sse";
import type { CaptureSettings } from "../src/api/wire";
import { TraceSession } from "../src/trace/session";

export interface Fixture {
  description: string;
  request: Record<string, unknown>;
  expect: { prompt_len: number; output_text: string; steps: number; layers: number[]; reasoning?: string; content?: string };
  sse: string;
  split_at_bytes: number[];
}

export function loadFixture(name: string): Fixture {
  return JSON.parse(readFileSync(join(__dirname, "fixtures", name), "utf8"));
}

/** Cut the fixture's bytes at the given offsets. */
export function slices(fx: Fixture, at: number[] = fx.split_at_bytes): Uint8Array[] {
  const buf = new TextEncoder().encode(fx.sse);
  const cuts = [0, ...at, buf.length];
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) out.push(buf.slice(cuts[i], cuts[i + 1]));
  return out;
}

export const defaultCapture: CaptureSettings = {
  mode: "raw",
  topK: 4,
  layers: "last",
  headIds: [],
  maskSystemPrompt: true,
  maskPrefix: 0,
  includePromptAttention: true,
};

/** A session with one user message and one assistant run fed from the fixture. */
export function replay(fx: Fixture, at?: number[]): { session: TraceSession; runId: string; items: SseItem[] } {
  const session = new TraceSession({ model: "SmolLM2-135M-Instruct" });
  session.batchWithAnimationFrame = false;
  session.addMessage("user", "Café?");
  const asst = session.addMessage("assistant", "");
  const run = session.startRun({
    messageId: asst.id,
    model: "SmolLM2-135M-Instruct",
    capture: defaultCapture,
    sampling: { maxTokens: 16, temperature: 0, topP: 1 },
  });
  const dec = new SseDecoder();
  const items: SseItem[] = [];
  const handle = (it: SseItem) => {
    items.push(it);
    if (it.kind === "chunk") session.ingestChunk(run.id, it.chunk);
  };
  session.markFirstByte(run.id);
  for (const s of slices(fx, at)) dec.push(s).forEach(handle);
  dec.end().forEach(handle);
  session.setBytesReceived(run.id, dec.bytes);
  session.finishRun(run.id, "done");
  return { session, runId: run.id, items };
}
