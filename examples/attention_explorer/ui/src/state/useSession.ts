import { useSyncExternalStore } from "react";
import type { TraceSession } from "../trace/session";

/** Re-render when the session changes (batched to one render per animation frame). */
export function useSessionVersion(s: TraceSession): number {
  return useSyncExternalStore(s.subscribe, s.getVersion);
}
