"""Fused float32 CPU ops of the decoder layer, in C++ (built once with torch's JIT
extension loader, like ``attention_cpu``): RMSNorm with the residual add, rotary
embedding, silu-and-mul, and the row argmax of greedy sampling.

Why: at decode a layer is ~70 small ATen ops, whose dispatch costs more than their math
(SmolLM2 at batch 1: norms, rotary and activation took 7.0 of 47 ms per step, 3.2 fused);
at prefill each is a separate pass over memory (0.87 s of a 4.4 s prefill, 0.39 s fused).
``torch.argmax`` over [32, 49152] logits takes 1.1 ms, the fused row argmax 0.6 ms
(docs/performance.md). Each op has a torch reference of the same signature here
(``*_ref``), which the callers use off CPU, for other dtypes, when the extension does not
build, or with ``SGLANG_CPU_FUSED_OPS=0``. Results: rotary bit-identical to the torch
expression; the norms and silu within a few float32 ulps (tests: test/sgl_kernel/test_cpu_ops.py).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from sgl_kernel import cpu_kernels
from sgl_kernel.jit import Extension

# The largest batch the layers send to small_linear (which takes up to 64 rows) when the
# weights are not packed (--disable-cpu-weight-prepack; packed weights go to packed_linear):
# against MKL's F.linear it measured 1.5x at 1 row, 1.1x at 16 (docs/performance.md)
SMALL_ROWS = 16
# -ffp-contract=off: a*b + c rounds as ATen's separate mul and add. -fopenmp: ATen's
# parallel_for is inline OpenMP, so without it every op ran on one thread.
_EXT = Extension("sgl_kernel_cpu_ops_", ["cpu_ops.cpp"], ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"], ["-fopenmp"],
                 fallback="torch ops")
_load = _EXT.get
_GEMM_EXT = cpu_kernels.EXT  # the GEMMs share the spin pool with the paged attention


def available() -> bool:
    """True when the fused ops are enabled and build (builds them on the first call)."""
    if os.environ.get("SGLANG_CPU_FUSED_OPS", "1") in ("0", "false", "off"):
        return False
    return _load() is not None


# ---------------------------------------------------------------- torch references
def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = x + residual
    return rms_norm_ref(x, weight, eps), x


def rotary_ref(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_cache: torch.Tensor,
               sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def rot(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    cos = cos_cache[positions].unsqueeze(1).to(q.dtype)
    sin = sin_cache[positions].unsqueeze(1).to(q.dtype)
    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


# ---------------------------------------------------------------- fused (float32, CPU)
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _load().rms_norm(x, weight, eps)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x + residual), x + residual), new tensors."""
    return _load().add_rms_norm(x, residual, weight, eps)


def rotary(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_cache: torch.Tensor,
           sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D], k [T, Hk, D] (heads dense, rows may be strided) -> new contiguous (q, k)."""
    return _load().rotary(positions, q, k, cos_cache, sin_cache)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _load().silu_and_mul(x)


def small_gemm_available() -> bool:
    """True when ``small_linear`` can run (the fused ops are on and its extension builds)."""
    return available() and _GEMM_EXT.get() is not None


def small_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for 1..64 float32 rows [M, K] (contiguous last dim) and a
    contiguous weight [N, K]: each weight byte read once, shared with the pool's workers,
    which spin between the GEMVs of a step instead of sleeping (csrc/small_gemm_cpu.cpp)."""
    return _GEMM_EXT.get().small_linear(x, weight, bias)


def pack_panels(weight: torch.Tensor) -> torch.Tensor:
    """A float32 weight [N, K] -> its K-major panels [ceil(N / 48), K, 48] (zero-padded), the
    layout ``packed_linear`` reads; done once at model load."""
    return _GEMM_EXT.get().pack_panels(weight)


def packed_linear(x: torch.Tensor, panels: torch.Tensor, n: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for float32 rows [M, K] (contiguous last dim) with the
    weight [n, K] given as ``pack_panels(weight)``: 8-row tiles against 48-column panels on
    the small GEMM's pool, the next panel prefetched while a panel's tiles run
    (csrc/packed_gemm_cpu.cpp). Each output is the k-ordered sum from the bias, so a row's
    result does not depend on the batch it is in."""
    return _GEMM_EXT.get().packed_linear(x, panels, n, bias)


def small_gemm_park() -> None:
    """Before a large GEMM on torch's OpenMP threads: the small GEMM's workers, which spin
    for a while after their last job, go to sleep now and leave the cores to it."""
    _GEMM_EXT.get().park()


def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """[B, V] float32 -> [B] int64, as ``torch.argmax(logits, -1)``."""
    return _load().argmax_rows(logits)
