// "Apply to next run": the Router's recommendation is kept in localStorage until the next
// request uses it (then it is cleared and recorded on that run), so it survives a reload.
import type { Settings } from "./settings";

export interface RouterApply {
  zone: string;
  temperature: number;
  top_p: number;
  capture_mode: "raw" | "sketch" | "fingerprint";
  /** The Router's confidence in the zone (0..1); absent in entries stored by older versions. */
  confidence?: number;
  /** What the recommendation was computed from, shown next to it. */
  basis: string;
  appliedAt: string;
}

const KEY = "attention-explorer.router-apply.v1";

export function loadPendingApply(): RouterApply | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const j = JSON.parse(raw) as RouterApply;
    if (typeof j.temperature !== "number" || typeof j.top_p !== "number" || !["raw", "sketch", "fingerprint"].includes(j.capture_mode)) return null;
    return j;
  } catch {
    return null;
  }
}

export function savePendingApply(a: RouterApply | null): void {
  try {
    if (a) localStorage.setItem(KEY, JSON.stringify(a));
    else localStorage.removeItem(KEY);
  } catch {
    /* private mode: the override lasts until the page closes */
  }
}

/** The settings of one run with the recommendation applied (the stored settings are unchanged). */
export function withApply(s: Settings, a: RouterApply | null): Settings {
  if (!a) return s;
  return {
    ...s,
    sampling: { ...s.sampling, temperature: a.temperature, topP: a.top_p },
    capture: { ...s.capture, mode: a.capture_mode },
  };
}
