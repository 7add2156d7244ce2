"""GPU-track tests. Without CUDA the Triton kernels run under the interpreter, which
reads TRITON_INTERPRET when the kernel module is first imported: set it here, before any
test module imports sgl_kernel's Triton code. Interpreted kernels are slow: tiny models,
few tokens."""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HERE = os.path.dirname(__file__)
for sub in ("managers", "capture"):  # sched_utils / capture_utils
    sys.path.insert(0, os.path.join(HERE, "..", sub))
