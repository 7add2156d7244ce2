"""Kernel tests: without a GPU, Triton kernels run under the interpreter.

TRITON_INTERPRET is read when a kernel module is imported, so it is set here, before
any test module imports sgl_kernel's Triton code. Interpreted kernels are slow: the
Triton tests use tiny shapes.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
