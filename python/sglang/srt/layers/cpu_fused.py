"""When the layers use sgl_kernel's fused C++ CPU ops (``sgl_kernel.cpu_ops``).

float32 tensors on CPU, when the extension builds and ``SGLANG_CPU_FUSED_OPS`` is not 0;
everything else (GPU, bfloat16, no compiler) keeps the torch expressions. The decision is
made once per process (``prepare`` at model load builds the extension before serving).
"""
from __future__ import annotations

import torch
from sgl_kernel import cpu_ops

_enabled: bool | None = None
_small_gemm: bool | None = None


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        try:
            _enabled = cpu_ops.available()
        except Exception:  # noqa: BLE001 - a broken build environment: the torch ops remain
            _enabled = False
    return _enabled


def small_gemm() -> bool:
    """True when the layers' few-row matmuls use sgl_kernel's small GEMM (decided once: the
    layers ask per matmul, and an environment lookup there costs a few us)."""
    global _small_gemm
    if _small_gemm is None:
        _small_gemm = False
        if enabled():
            _small_gemm = cpu_ops.small_gemm_available()
    return _small_gemm


def applies(x: torch.Tensor) -> bool:
    """True when ``x`` should go through the fused CPU ops."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and enabled()


def prepare(device: torch.device, dtype: torch.dtype) -> bool:
    """Build the extension now when the model will use it (CPU, float32)."""
    return device.type == "cpu" and dtype == torch.float32 and enabled()
