"""oneDNN weight prepacking for the linear layers on CPU.

Why: decode multiplies a handful of rows (the batch) by every weight matrix. MKL's
sgemm behind ``F.linear`` is tuned for M=1 (gemv) and large M; at M=2..64 it is up to
2-3x slower per row than oneDNN with a weight reordered once into its blocked layout
(measured on this project's CPU VM: SmolLM2's 49152x576 LM head at M=8 takes 17 ms
through ``F.linear`` and 6 ms prepacked; a 3072x576 gate_up 0.50 vs 0.22 ms). Real
SGLang packs CPU weights after loading for the same reason.

The packed copy sits next to the original parameter (tied embeddings, TP loading and
``state_dict`` keep using the original), so the weights' memory doubles on CPU; set
``--disable-cpu-weight-prepack`` when memory is tighter than time. The ops are the ones
torch's inductor emits for frozen CPU linears (``torch.ops.mkldnn``); where they are
missing or fail a self-check the layer silently keeps ``F.linear``.
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
# Up to this many float32 rows go through sgl_kernel's small GEMM (cpu_ops.small_linear):
# each weight read once by a pool whose workers stay awake across a step's GEMVs, where
# MKL's and oneDNN's OpenMP regions each pay a thread wake-up under the passive wait.
# SGLANG_CPU_SMALL_GEMM=0 turns it off (then MKL / oneDNN as before).
_SMALL_ROWS = 0 if os.environ.get("SGLANG_CPU_SMALL_GEMM", "1") in ("0", "false", "off") else cpu_ops.SMALL_ROWS


def linear(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: a few float32 rows (decode at batch 1..16) through
    sgl_kernel's small GEMM, else through the packed weight when one exists."""
    rows = x.numel() // x.shape[-1]
    if (0 < rows <= _SMALL_ROWS and weight.dtype == torch.float32 and cpu_fused.applies(x)
            and weight.is_contiguous() and cpu_fused.small_gemm()):
        x2 = x.reshape(rows, x.shape[-1])
        out = cpu_ops.small_linear(x2 if x2.stride(-1) == 1 else x2.contiguous(), weight, bias)
        return out.reshape(*x.shape[:-1], weight.shape[0])
    if _SMALL_ROWS and rows > _SMALL_ROWS and x.device.type == "cpu" and cpu_fused.small_gemm():
        cpu_ops.small_gemm_park()  # its spinning workers would take cores from the OpenMP threads
    if packed is None:
        return F.linear(x, weight, bias)
    if rows == 0 or (rows == 1 and weight.numel() <= _GEMV_MAX_ELEMENTS):
        return F.linear(x, weight, bias)
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, x.shape[-1]), packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _pack(weight: torch.Tensor) -> torch.Tensor | None:
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_HINT_ROWS)
        probe = torch.randn(3, weight.shape[1], dtype=weight.dtype)
        got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
        want = F.linear(probe, weight.detach())
        tol = 1e-3 if weight.dtype == torch.float32 else 5e-2
        if not torch.allclose(got.float(), want.float(), rtol=tol, atol=tol * want.abs().max().item()):
            return None
        return packed
    except (RuntimeError, AttributeError) as e:  # op missing in this torch build, or dtype unsupported
        logger.debug("oneDNN prepack unavailable: %s", e)
        return None


def prepack_linear_weights(model: nn.Module, device: torch.device, dtype: torch.dtype) -> int:
    """Attach a packed copy (``module.packed_weight``) to every layer that opted in with a
    ``packed_weight`` attribute. Returns how many were packed (0 off CPU)."""
    if device.type != "cpu" or dtype not in _DTYPES or not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for module in model.modules():
        if hasattr(module, "packed_weight") and isinstance(weight := getattr(module, "weight", None), torch.Tensor):
            packed = _pack(weight)
            setattr(module, "packed_weight", packed)  # any module class that declares the attribute opts in
            count += packed is not None
    return count
