"""Whether Triton can run the kernels for a given tensor, and a clear error when not.

Triton launches need a GPU driver; on CPU tensors they only run under the interpreter
(``TRITON_INTERPRET=1``, read when a kernel module is first imported), which is very slow
and meant for tests on tiny shapes.
"""
from __future__ import annotations

import importlib.util
import os

import torch


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def choose_impl(impl: str, x: torch.Tensor) -> str:
    """Resolve ``impl`` ("auto" | "torch" | "triton") for a tensor on x's device."""
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    if impl == "auto":
        return "triton" if x.is_cuda and triton_importable() else "torch"
    if impl == "triton":
        if not triton_importable():
            raise RuntimeError("impl='triton' needs the triton package (pip install triton)")
        if not x.is_cuda and not interpreting():
            raise RuntimeError("impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 for CPU tensors")
    return impl


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
