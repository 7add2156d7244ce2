// One polling loop for the status hooks: tick now and every pollMs until stopped.
/** Starts polling; the returned function stops it. Stopping aborts in-flight requests
 * (through `signal`) and turns `alive()` false, so an answer arriving late is dropped. */
export function startPolling(
  tick: (signal: AbortSignal, alive: () => boolean) => Promise<void>,
  pollMs: number,
): () => void {
  let alive = true;
  const ctrl = new AbortController();
  const run = () => void tick(ctrl.signal, () => alive);
  run();
  const id = setInterval(run, pollMs);
  return () => {
    alive = false;
    ctrl.abort();
    clearInterval(id);
  };
}
