#!/usr/bin/env bash
# Prepare a checkout for a GPU machine that has torch/triton/transformers but no network and
# none of pyzmq or the default model (run here, on the machine with PyPI, after install.sh):
#   .whl/           pyzmq (sglang.Engine's transport), xgrammar + apache-tvm-ffi (structured
#                   outputs) and dill (custom logit processors) for CPython 3.12, installed
#                   there with pip install --no-index --no-deps --target /tmp/site .whl/*.whl
#   .gpu/tokenizer  the default model's tokenizer, for the tests' tiny models and for
#                   bench_attention_capture on random-weight models (SGLANG_TEST_TOKENIZER)
# Both paths are git-ignored: pass them to the device as carried paths.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu
rm -f .whl/pyzmq-*.whl .whl/xgrammar-*.whl .whl/apache_tvm_ffi-*.whl .whl/dill-*.whl
python -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  -d .whl "pyzmq==$(python -c 'import zmq; print(zmq.__version__)')" \
  "xgrammar==$(python -c 'import importlib.metadata as m; print(m.version("xgrammar"))')" \
  "apache-tvm-ffi==$(python -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))')" \
  "dill==$(python -c 'import importlib.metadata as m; print(m.version("dill"))')"
python - <<'PY'
from sglang.srt.model_loader.locate import locate_model
from sglang.srt.model_loader.tokenizer import load_tokenizer

load_tokenizer(locate_model(None)).save_pretrained(".gpu/tokenizer")
PY
ls .whl .gpu/tokenizer
