// Connection status: /health polled every few seconds, capabilities fetched once the
// server is up, and a plain sentence saying whether capture can be used.
import { useEffect, useState } from "react";
import { fetchCapabilities, fetchHealth, fetchModels } from "../api/client";
import type { Capabilities } from "../api/wire";
import { startPolling } from "./poll";

export interface Connection {
  state: "checking" | "up" | "down";
  caps: Capabilities | null;
  /** Why capture cannot be used (null when it can). */
  captureProblem: string | null;
  models: string[];
}

export function captureProblemOf(caps: Capabilities | null, capsError: string | null): string | null {
  if (capsError) return capsError;
  if (!caps) return null;
  if (caps.guardrails?.disabled_in_production) return "Attention capture is disabled on this server (production guardrail).";
  if (!caps.supported) return "This server has attention capture disabled (start it with --return-attention-tokens).";
  return null;
}

export function useConnection(serverUrl: string, apiKey: string, pollMs = 5000): Connection {
  const [conn, setConn] = useState<Connection>({ state: "checking", caps: null, captureProblem: null, models: [] });
  useEffect(() => {
    let wasUp = false;
    setConn({ state: "checking", caps: null, captureProblem: null, models: [] });
    const tick = async (signal: AbortSignal, alive: () => boolean) => {
      const up = await fetchHealth(serverUrl, signal);
      if (!alive()) return;
      if (!up) {
        wasUp = false;
        setConn((c) => ({ ...c, state: "down" }));
        return;
      }
      if (!wasUp) {
        wasUp = true;
        const [caps, models] = await Promise.all([fetchCapabilities(serverUrl, apiKey, signal), fetchModels(serverUrl, signal)]);
        if (!alive()) return;
        setConn({
          state: "up",
          caps: caps.ok ? caps.caps : null,
          captureProblem: captureProblemOf(caps.ok ? caps.caps : null, caps.ok ? null : caps.message),
          models,
        });
      } else {
        setConn((c) => (c.state === "up" ? c : { ...c, state: "up" }));
      }
    };
    return startPolling(tick, pollMs);
  }, [serverUrl, apiKey, pollMs]);
  return conn;
}
