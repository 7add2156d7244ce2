"""sgl_kernel's C++ CPU kernels that share one spin-then-sleep thread pool, built as one
extension (``sgl_kernel.jit``): the decode GEMMs (``csrc/small_gemm_cpu.cpp``,
``csrc/packed_gemm_cpu.cpp``) and the paged attention (decode and prefill) (``csrc/paged_attention_cpu.cpp``).

Why one extension: the pool (``csrc/spin_pool.h``) keeps its workers awake across the
GEMMs and attentions of a decode step; a second extension would start a second pool, whose
spinning threads would compete with the first for the same cores. Callers use the wrappers
in ``sgl_kernel.cpu_ops`` and ``sgl_kernel.attention_cpu``; ``EXT.get()`` is None when the
extension cannot build, and each caller then keeps its torch path.
"""
from __future__ import annotations

from sgl_kernel.jit import Extension

# -ffp-contract=fast: the GEMMs and the attention want fused multiply-adds (their sums have
# no torch expression to match bit for bit); -fopenmp for the pool's OpenMP fallback
EXT = Extension("sgl_kernel_cpu_kernels_",
                ["small_gemm_cpu.cpp", "packed_gemm_cpu.cpp", "paged_attention_cpu.cpp", "sinks_cpu.cpp",
                 "cpu_kernels_bindings.cpp"],
                ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"], ["-fopenmp"],
                fallback="the torch ops (MKL / oneDNN GEMMs, gather + SDPA attention)",
                headers=("vec_math.h", "spin_pool.h", "cpu_kernels.h"))
