#!/usr/bin/env bash
# Install, then run the main job: the server with the default model and attention capture
# on :30000, and the Attention Explorer dashboard on :3001 — the production build (`npm run build`)
# served by `vite preview`, which talks to the server on :30000 exactly as `npm run dev` does
# (default URL http://localhost:30000, CORS allowed by the server). `npm run dev` stays for
# development. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMP_WAIT_POLICY=PASSIVE
python -m sglang.launch_server --return-attention-tokens --attention-tokens-top-k 32 --port 30000 &
server=$!
trap 'kill $server $ui 2>/dev/null; wait' EXIT INT TERM
(cd examples/attention_explorer/ui && npm run build && exec npx vite preview --port 3001 --strictPort) &
ui=$!
echo "waiting for the server on http://127.0.0.1:30000/health ..."
until curl -sf http://127.0.0.1:30000/health >/dev/null; do
  kill -0 $server 2>/dev/null || { echo "the server failed to start"; exit 1; }
  sleep 2
done
echo "ready: open http://localhost:3001 (server http://localhost:30000)"
wait $server
