"""Weight prepacking and the matmul of the linear layers on CPU.

Why: decode multiplies a handful of rows (the batch) by every weight matrix, and at 1-256
rows neither MKL's sgemm behind ``F.linear`` nor oneDNN reaches the machine's limits: each
call is an OpenMP region whose sleeping thread must be woken (``OMP_WAIT_POLICY=PASSIVE``),
and their kernels stream the weights from DRAM and then compute, rather than both at once.
So on CPU in float32 each weight is packed once after loading into sgl_kernel's K-major
panels (``cpu_ops.pack_panels``), and up to ``_PACKED_MAX_ROWS`` rows go through
``cpu_ops.packed_linear`` on a pool whose workers stay awake across a step. SmolLM2's
decode GEMMs plus LM head, 30 layers, this project's 2-core VM, passive wait: 17 ms at 1 row
(oneDNN 31), 34 ms at 32 rows (oneDNN 53, MKL 54), 193 ms at 256; at 512 rows all three tie
and at 2048 MKL is 5% ahead, so prefill chunks go to ``F.linear``
(docs/performance.md). Real SGLang packs CPU weights after loading for the same reason.

bfloat16 (or a build without the extension, or ``SGLANG_CPU_SMALL_GEMM=0``) packs for
oneDNN instead (``torch.ops.mkldnn``, the ops inductor emits for frozen CPU linears). The
packed copy sits next to the original parameter (tied embeddings, TP loading and
``state_dict`` keep using the original), so the weights' memory doubles on CPU; with
``--disable-cpu-weight-prepack`` there is no copy and 1..16 float32 rows go through the
small GEMM on the original layout (``cpu_ops.small_linear``), the rest through ``F.linear``.
Where a pack fails its self-check the layer keeps the unpacked path.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from sgl_kernel import cpu_ops
from torch import nn

from sglang.srt.layers import cpu_fused

logger = logging.getLogger(__name__)

# The batch size oneDNN tunes the blocked layout for. 32 was the best single choice for
# M in 1..1024 on the measured shapes (within 10% of the per-M best everywhere).
_PACK_HINT_ROWS = 32
# At one row, oneDNN's fixed ~0.08 ms per call loses to MKL's gemv on small matrices
# (576x576: 0.11 vs 0.03 ms) and wins on large ones (the LM head: 5 vs 10 ms).
_GEMV_MAX_ELEMENTS = 1 << 22
_DTYPES = (torch.float32, torch.bfloat16)
# Up to this many rows use the packed panels (measured ahead of MKL and oneDNN up to 256 rows,
# level at 512, behind at 2048: docstring).
_PACKED_MAX_ROWS = 256
# Without a packed copy, up to this many float32 rows go through the small GEMM on the
# original layout (1.5x MKL at one row, 1.1x at 16).
_SMALL_ROWS = cpu_ops.SMALL_ROWS


_SMALL_GEMM_ENV = os.environ.get("SGLANG_CPU_SMALL_GEMM", "1") not in ("0", "false", "off")


def kernels() -> bool:
    """sgl_kernel's CPU GEMMs are on (decided once: SGLANG_CPU_SMALL_GEMM=0 turns them off)."""
    return _SMALL_GEMM_ENV and cpu_fused.small_gemm()


def packs_panels(dtype: torch.dtype) -> bool:
    """Weights of this dtype are packed into sgl_kernel's panels (else for oneDNN)."""
    return dtype == torch.float32 and kernels()


def is_panels(packed: torch.Tensor | None) -> bool:
    """True for sgl_kernel's panels ([P, K, 48]); oneDNN's packed weights are 2-D."""
    return packed is not None and packed.dim() == 3


def linear(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through the packed copy of the weight when there is one
    (sgl_kernel's panels up to 256 rows, oneDNN's at any), else the small GEMM for a few
    float32 rows, else ``F.linear``."""
    rows = x.numel() // x.shape[-1]
    if is_panels(packed):
        assert packed is not None
        if 0 < rows <= _PACKED_MAX_ROWS and x.device.type == "cpu":
            x2 = x.reshape(rows, x.shape[-1])
            out = cpu_ops.packed_linear(x2 if x2.stride(-1) == 1 else x2.contiguous(), packed, weight.shape[0], bias)
            return out.reshape(*x.shape[:-1], weight.shape[0])
        cpu_ops.small_gemm_park()  # the pool's spinning workers would take cores from the OpenMP threads
        return F.linear(x, weight, bias)
    if (0 < rows <= _SMALL_ROWS and weight.dtype == torch.float32 and cpu_fused.applies(x)
            and weight.is_contiguous() and kernels()):
        x2 = x.reshape(rows, x.shape[-1])
        out = cpu_ops.small_linear(x2 if x2.stride(-1) == 1 else x2.contiguous(), weight, bias)
        return out.reshape(*x.shape[:-1], weight.shape[0])
    if rows > _SMALL_ROWS and x.device.type == "cpu" and kernels():
        cpu_ops.small_gemm_park()
    if packed is None:
        return F.linear(x, weight, bias)
    if rows == 0 or (rows == 1 and weight.numel() <= _GEMV_MAX_ELEMENTS):
        return F.linear(x, weight, bias)
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, x.shape[-1]), packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _self_check(weight: torch.Tensor, packed: torch.Tensor) -> bool:
    probe = torch.randn(3, weight.shape[1], dtype=weight.dtype)
    if is_panels(packed):
        got = cpu_ops.packed_linear(probe, packed, weight.shape[0])
    else:
        got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
    want = F.linear(probe, weight.detach())
    tol = 1e-3 if weight.dtype == torch.float32 else 5e-2
    return bool(torch.allclose(got.float(), want.float(), rtol=tol, atol=tol * want.abs().max().item()))


def _pack(weight: torch.Tensor) -> torch.Tensor | None:
    try:
        if packs_panels(weight.dtype):
            packed = cpu_ops.pack_panels(weight.detach())
        else:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_HINT_ROWS)
        return packed if _self_check(weight, packed) else None
    except (RuntimeError, AttributeError) as e:  # op missing in this torch build, or dtype unsupported
        logger.debug("weight prepack unavailable: %s", e)
        return None


def prepack_linear_weights(model: nn.Module, device: torch.device, dtype: torch.dtype) -> int:
    """Attach a packed copy (``module.packed_weight``) to every layer that opted in with a
    ``packed_weight`` attribute. Returns how many were packed (0 off CPU)."""
    if device.type != "cpu" or dtype not in _DTYPES:
        return 0
    if not packs_panels(dtype) and not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for module in model.modules():
        if hasattr(module, "packed_weight") and isinstance(weight := getattr(module, "weight", None), torch.Tensor):
            packed = _pack(weight)
            setattr(module, "packed_weight", packed)  # any module class that declares the attribute opts in
            count += packed is not None
    return count
