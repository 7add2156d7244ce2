#!/usr/bin/env bash
# Install everything, type-check the engine (mypy), then run the whole test suite: pytest
# (engine, server, capture, kernels, sidecar), Vitest, and the end-to-end tests in headless
# Chromium against a real server running the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
# Types of the engine and capture packages (the packages and settings: [tool.mypy] in pyproject.toml).
python -m mypy
export OMP_WAIT_POLICY=PASSIVE NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba-cache}" NUMBA_THREADING_LAYER=workqueue
python -m pytest -q -p no:cacheprovider test
cd examples/attention_explorer/ui
npm test
npm run test:e2e
