// Runs one chat generation: builds the request from settings, streams it into the
// session, and finishes the run whatever happens (done, stopped, or an error).
import { adaptiveConfigOf, buildChatRequest, streamChat } from "../api/client";
import type { Capabilities } from "../api/wire";
import type { TraceSession } from "../trace/session";
import { parseExtra, type Settings } from "./settings";

export interface RunHandle {
  runId: string;
  abort: () => void;
  done: Promise<void>;
}

export function startGeneration(session: TraceSession, settings: Settings, captureAllowed: boolean, serverModel?: string, caps: Capabilities | null = null): RunHandle {
  const extra = parseExtra(settings.extraJson);
  const conversation = session.conversation();
  const messages = settings.systemPrompt.trim()
    ? [{ role: "system", content: settings.systemPrompt }, ...conversation.filter((m) => m.role !== "system")]
    : conversation;
  const asst = session.addMessage("assistant", "");
  // The server rejects unknown model names, so default to the one it reports in /v1/models.
  const model = settings.model || serverModel || session.model || "default";
  const run = session.startRun({ messageId: asst.id, model, capture: { ...settings.capture }, sampling: { ...settings.sampling } });
  session.serverUrl = settings.serverUrl;
  const ctrl = new AbortController();
  const body = buildChatRequest({
    model,
    messages,
    capture: settings.capture,
    sampling: settings.sampling,
    captureEnabled: settings.captureEnabled && captureAllowed,
    adaptiveSampling: settings.adaptiveSampling,
    extra: extra.ok ? extra.value : {},
  });
  const adaptive = adaptiveConfigOf(body, caps);
  if (adaptive) run.adaptiveConfig = adaptive;
  const done = (async () => {
    if (!extra.ok) {
      session.finishRun(run.id, "error", extra.message);
      return;
    }
    let streamError: string | null = null;
    try {
      await streamChat(
        settings.serverUrl,
        body,
        {
          onFirstByte: () => session.markFirstByte(run.id),
          onItem: (item) => {
            if (item.kind === "chunk") session.ingestChunk(run.id, item.chunk);
            else if (item.kind === "error") streamError = item.message;
          },
          onBytes: (n) => session.setBytesReceived(run.id, n),
        },
        ctrl.signal,
        settings.apiKey || undefined,
      );
      if (streamError) session.finishRun(run.id, "error", streamError);
      else session.finishRun(run.id, "done");
    } catch (e) {
      if (ctrl.signal.aborted) session.finishRun(run.id, "stopped");
      else session.finishRun(run.id, "error", (e as Error).message || String(e));
    }
  })();
  return { runId: run.id, abort: () => ctrl.abort(), done };
}
