// Set-up for the issue-8 end-to-end test: a real `python -m sglang.srt.attention_sidecar`
// ingesting fingerprints over ZMQ into a temporary SQLite file, a server pushing to it, a few
// fingerprint-mode requests of the default model, discovery on that database, and a reload so
// the sidecar classifies against the fresh artifacts.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, REPO, waitForHealth } from "./lib.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startSidecar() {
  const dir = mkdtempSync(join(tmpdir(), "ae-sidecar-"));
  const [port, zport] = await Promise.all([freePort(), freePort()]);
  const python = process.env.PYTHON || "python";
  const zmq = `tcp://127.0.0.1:${zport}`;
  const args = ["-m", "sglang.srt.attention_sidecar", "--db", join(dir, "fingerprints.db"), "--discovery-dir", join(dir, "artifacts"), "--port", String(port), "--zmq-bind", zmq, "--flush-interval", "0.2"];
  const child = spawn(python, args, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      for (let i = 0; i < 40 && child.exitCode === null; i++) await sleep(250);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForHealth(url, 60_000, child);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n--- sidecar log ---\n${log.slice(-3000)}`);
  }
  return { url, zmq, dir, stop, log: () => log };
}

const SEED_PROMPTS = [
  "Write a haiku about rain.",
  "List five fruits, one per line.",
  "Explain what a compiler does in two sentences.",
  "Count from one to fifteen, separated by commas.",
  "Describe a cat to someone who has never seen one.",
];

/** Fingerprint-mode requests (all layers chosen by "auto"): the server pushes each step to the sidecar. */
export async function seedFingerprints(serverUrl, maxTokens = 48) {
  let steps = 0;
  for (const p of SEED_PROMPTS) {
    const res = await fetch(`${serverUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "default",
        messages: [{ role: "user", content: p }],
        max_tokens: maxTokens,
        temperature: 0,
        return_attention_tokens: true,
        attention_fingerprint_mode: true,
        attention_capture_layers: "auto",
      }),
    });
    if (!res.ok) throw new Error(`seed request failed: HTTP ${res.status} ${await res.text()}`);
    const j = await res.json();
    steps += j.choices[0].attention_tokens?.length ?? 0;
  }
  return steps;
}

/** Flush the sidecar, run discovery on its database, reload; returns the discovery summary. */
export async function runDiscovery(sidecar, minSamples = 50) {
  const flush = await fetch(`${sidecar.url}/storage/flush`, { method: "POST" }).then((r) => r.json());
  const python = process.env.PYTHON || "python";
  const r = spawnSync(
    python,
    ["examples/attention_explorer/discovery/run_discovery.py", "--db", join(sidecar.dir, "fingerprints.db"), "--output-dir", join(sidecar.dir, "artifacts"), "--min-samples", String(minSamples), "--no-plot", "--no-progress"],
    { cwd: REPO, encoding: "utf8", timeout: 240_000 },
  );
  if (r.status !== 0) throw new Error(`run_discovery.py exited ${r.status}: ${r.stderr?.slice(-2000)}`);
  const summary = JSON.parse(r.stdout.trim().split("\n").pop());
  const reload = await fetch(`${sidecar.url}/discovery/reload`, { method: "POST" });
  if (!reload.ok) throw new Error(`reload failed: HTTP ${reload.status} ${await reload.text()}`);
  return { stored: flush.stored, ...summary };
}
