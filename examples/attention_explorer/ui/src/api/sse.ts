// Server-sent events decoding for the chat stream.
//
// Network reads split the stream anywhere: inside a line, inside a JSON value, even inside
// a multi-byte UTF-8 character. TextDecoder in streaming mode keeps partial characters,
// and eventsource-parser keeps partial lines/events, so `push` can take any byte slice.
import { createParser, type EventSourceParser } from "eventsource-parser";
import type { ChatChunk } from "./wire";

export type SseItem =
  | { kind: "chunk"; chunk: ChatChunk; bytes: number }
  | { kind: "done" }
  | { kind: "error"; message: string; raw: string };

export class SseDecoder {
  private decoder = new TextDecoder("utf-8");
  private parser: EventSourceParser;
  private out: SseItem[] = [];
  /** Total bytes pushed so far (what the HUD shows as received). */
  bytes = 0;
  done = false;

  constructor() {
    this.parser = createParser({
      onEvent: (ev) => {
        const data = ev.data;
        if (data === "[DONE]") {
          this.done = true;
          this.out.push({ kind: "done" });
          return;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(data);
        } catch (e) {
          this.out.push({ kind: "error", message: `bad JSON in SSE event: ${(e as Error).message}`, raw: data });
          return;
        }
        const obj = parsed as Record<string, unknown>;
        if (obj && typeof obj === "object" && "error" in obj && !("choices" in obj)) {
          const err = obj.error as { message?: string } | string;
          const msg = typeof err === "string" ? err : err?.message ?? JSON.stringify(err);
          this.out.push({ kind: "error", message: `server error: ${msg}`, raw: data });
          return;
        }
        if (!obj || !Array.isArray(obj.choices)) {
          this.out.push({ kind: "error", message: "SSE event without a choices array", raw: data });
          return;
        }
        this.out.push({ kind: "chunk", chunk: obj as unknown as ChatChunk, bytes: data.length });
      },
    });
  }

  /** Feed a byte slice (or text); returns the items completed by it. */
  push(input: Uint8Array | string): SseItem[] {
    if (typeof input === "string") {
      this.bytes += new TextEncoder().encode(input).length;
      this.parser.feed(input);
    } else {
      this.bytes += input.byteLength;
      this.parser.feed(this.decoder.decode(input, { stream: true }));
    }
    return this.drain();
  }

  /** Flush at end of stream: a final event without its blank line still counts. */
  end(): SseItem[] {
    const tail = this.decoder.decode();
    if (tail) this.parser.feed(tail);
    this.parser.feed("\n\n");
    return this.drain();
  }

  private drain(): SseItem[] {
    const items = this.out;
    this.out = [];
    return items;
  }
}

/** Decode a whole SSE body given as a list of byte/text slices (tests and replays). */
export function decodeAll(parts: (Uint8Array | string)[]): SseItem[] {
  const d = new SseDecoder();
  const items: SseItem[] = [];
  for (const p of parts) items.push(...d.push(p));
  items.push(...d.end());
  return items;
}
