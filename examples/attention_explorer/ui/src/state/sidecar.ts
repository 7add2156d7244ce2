// Connection to the attention sidecar (optional). When it is up with discovery artifacts,
// the Manifold places points with its /classify 2-D coordinates and the Router shows its
// cluster; when it is absent, both fall back to the shipped PCA in the browser.
import { useEffect, useMemo, useState } from "react";
import { type PcaModel, parsePcaModel, SHIPPED_PCA } from "../analysis/pca";
import { type DiscoveryStatus, type SidecarCluster, SidecarClient } from "../api/sidecar";
import { startPolling } from "./poll";

export interface SidecarState {
  state: "off" | "checking" | "up" | "down";
  client: SidecarClient | null;
  status: DiscoveryStatus | null;
  /** Artifacts loaded: /classify answers. */
  ready: boolean;
  clusters: SidecarCluster[];
  pca: PcaModel;
  pcaSource: "sidecar" | "shipped";
  error: string | null;
}

export function useSidecar(url: string, pollMs = 10_000): SidecarState {
  const client = useMemo(() => (url.trim() ? new SidecarClient(url) : null), [url]);
  const [st, setSt] = useState<SidecarState>({
    state: client ? "checking" : "off",
    client,
    status: null,
    ready: false,
    clusters: [],
    pca: SHIPPED_PCA,
    pcaSource: "shipped",
    error: null,
  });
  useEffect(() => {
    if (!client) {
      setSt({ state: "off", client: null, status: null, ready: false, clusters: [], pca: SHIPPED_PCA, pcaSource: "shipped", error: null });
      return;
    }
    let lastRun: number | null | undefined;
    const tick = async (signal: AbortSignal, alive: () => boolean) => {
      try {
        const status = await client.status(signal);
        const runId = status.current?.run_id ?? null;
        if (runId === lastRun) {
          if (alive()) setSt((s) => ({ ...s, state: "up", status, error: null }));
          return;
        }
        // new artifacts (or first contact): refresh centroids and the PCA interpretation
        const [cent, pcaDoc] = await Promise.all([client.centroids(signal), client.pcaInterpretation(signal)]);
        let pca = SHIPPED_PCA;
        let pcaSource: SidecarState["pcaSource"] = "shipped";
        try {
          pca = parsePcaModel(pcaDoc);
          pcaSource = "sidecar";
        } catch {
          /* keep the shipped model */
        }
        lastRun = runId;
        if (alive()) setSt({ state: "up", client, status, ready: status.loaded, clusters: cent.clusters, pca, pcaSource, error: null });
      } catch (e) {
        lastRun = undefined;
        if (alive() && !signal.aborted)
          setSt((s) => ({ ...s, state: "down", ready: false, client, error: (e as Error).message || String(e) }));
      }
    };
    setSt((s) => ({ ...s, state: "checking", client }));
    return startPolling(tick, pollMs);
  }, [client, pollMs]);
  return st;
}
