// The sessions in the session selector, and how an import joins them: the same file imported
// twice shows the copy already loaded; a trace whose id is already loaded (the live chat it was
// exported from, a saved copy) gets an id of its own, so no two entries share a key or an id.
import { importTrace } from "../trace/jsonl";
import { TraceSession } from "../trace/session";

export interface Loaded {
  /** Unique per entry of the session selector. */
  key: string;
  session: TraceSession;
  label: string;
  live: boolean;
  /** Set when the session was opened from the saved list (IndexedDB). */
  savedId?: string;
  /** Exact JSONL an imported entry came from (to spot the same file imported twice). */
  importedText?: string;
}

let loadedKey = 0;
export const nextKey = () => `loaded-${++loadedKey}`;

export const liveEntry = (): Loaded => ({ key: nextKey(), session: new TraceSession(), label: "Live session", live: true });

/** A trace id not used by any loaded session (the id itself when free). */
export function freeTraceId(loaded: Loaded[], id: string, tag: string): string {
  const used = new Set(loaded.map((l) => l.session.traceId));
  if (!used.has(id)) return id;
  for (let i = 1; ; i++) {
    const cand = `${id}~${tag}${i > 1 ? `-${i}` : ""}`;
    if (!used.has(cand)) return cand;
  }
}

export type ImportResult =
  | { kind: "existing"; at: number; text: string }
  | { kind: "added"; next: Loaded[]; at: number; text: string };

/** Add an imported JSONL to the list (throws TraceImportError when the file is bad). */
export function importInto(loaded: Loaded[], jsonl: string, fileName: string): ImportResult {
  const same = loaded.findIndex((l) => l.importedText === jsonl);
  if (same >= 0) return { kind: "existing", at: same, text: `${fileName} is already loaded (${loaded[same].label}); showing it.` };
  const s = importTrace(jsonl);
  const clash = loaded.find((l) => l.session.traceId === s.traceId);
  if (clash) s.traceId = freeTraceId(loaded, s.traceId, "import");
  const next = [...loaded, { key: nextKey(), session: s, label: `Imported: ${fileName}`, live: false, importedText: jsonl }];
  const text =
    `Imported ${fileName}: ${s.runs.size} run(s), ${s.messages.length} message(s).` +
    (clash ? ` Its trace id is already loaded (${clash.label}): this copy is listed separately as ${s.traceId}.` : "");
  return { kind: "added", next, at: next.length - 1, text };
}
