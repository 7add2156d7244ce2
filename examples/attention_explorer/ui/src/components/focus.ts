// Which token the views point at: hovered (transient) or pinned (clicked).
export interface Focus {
  runId: string;
  position: number;
}

export const sameFocus = (a: Focus | null, b: Focus | null) =>
  a === b || (!!a && !!b && a.runId === b.runId && a.position === b.position);

export interface ViewOptions {
  /** Layer to show links and tints for; null = the last captured layer of the run. */
  layer: number | null;
  excludeSinks: boolean;
  /** Focused query head (per-head capture, chosen in the head grid); null/absent = the head mean. */
  head?: number | null;
}
