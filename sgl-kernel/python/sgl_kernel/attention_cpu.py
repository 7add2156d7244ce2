"""Paged attention on CPU in C++, decode and prefill (built once with torch's JIT extension loader).

Reads each key and value row of a request straight from the paged pool: no padded
gather, so a decode step at batch 32 moves about a third of the bytes that gather + SDPA
move, and a prefill chunk needs no per-request gather, transpose and SDPA call per layer.
float32 only; everything else (and a machine without a C++ compiler, or
``SGLANG_CPU_DECODE_ATTENTION=sdpa``) keeps the torch path (build: ``sgl_kernel.cpu_kernels``).
"""
from __future__ import annotations

import os

import torch

from sgl_kernel import cpu_kernels

_load = cpu_kernels.EXT.get  # built with the GEMMs: one spin pool for both


def available() -> bool:
    """True when the C++ kernel is enabled and builds (builds it on the first call)."""
    if os.environ.get("SGLANG_CPU_DECODE_ATTENTION", "cpp") != "cpp":
        return False
    return _load() is not None


def decode_attention(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, req_to_token: torch.Tensor,
                     req_rows: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                     mask_prefix: torch.Tensor | None = None, per_head: bool = False,
                     kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """(out [B, Hq, D], lse [B, Hq]) of one query per request over keys 0..seq_len-1.

    q [B, Hq, D] float32, k/v_buffer [slots, Hkv, D] float32, req_to_token [R, max_ctx].
    With ``mask_prefix`` [B] the kernel also returns, from the same probabilities, the
    capture statistics of every row over all heads (docs/architecture.md#capture-definitions):
    (out, lse, hist [B, 16], masked_mass [B], entropy [B]); keys at positions < mask_prefix
    count in masked_mass instead of the histogram. ``per_head=True`` returns them per head in
    the decode stats layout instead: (out, lse, stats [B, Hq, 18]) as attention_triton's.
    ``kv`` = (k_new, v_new [B, Hkv, D], loc [B]): the new tokens' keys and values, written
    into slots ``loc`` of the buffers first."""
    mod = _load()
    if mod is None:
        raise RuntimeError("the C++ CPU decode attention could not be built")
    res = mod.decode_attention(q, k_buffer, v_buffer, req_to_token, req_rows, seq_lens, float(scale), mask_prefix,
                               *(kv or (None, None, None)))
    if mask_prefix is None:
        return res[0], res[1]
    out, lse, hist, masked, entropy = res
    hq = q.shape[1]
    if per_head:
        # the kernel sums hist and masked mass over each KV group's G heads: every head of a
        # group gets the group's mean, so a mean over heads is exact; entropy is per head
        g = hq // hist.shape[1]
        group = torch.cat([hist, masked[..., None]], -1).div_(g).repeat_interleave(g, dim=1)
        return out, lse, torch.cat([group, entropy[..., None]], -1)
    return out, lse, hist.sum(1) / hq, masked.sum(1) / hq, entropy.sum(1) / hq


def extend_attention(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, req_to_token: torch.Tensor,
                     req_rows: torch.Tensor, prefix_lens: torch.Tensor, extend_lens: torch.Tensor,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [T, Hq, D], lse [T, Hq]) of a prefill batch: q [T, Hq, D] float32 holds each
    request's extend rows in batch order (extend_lens [B] of them); row i of request b sits
    at position prefix_lens[b] + i and attends keys 0..prefix_lens[b] + i (causal), all of
    which must already be in the pool (k/v_buffer [slots, Hkv, D] float32, slots from
    req_to_token[req_rows[b]]). The same softmax(q k^T * scale) v as SDPA with is_causal
    after the prefix, in float32."""
    mod = _load()
    if mod is None:
        raise RuntimeError("the C++ CPU attention could not be built")
    out, lse = mod.extend_attention(q, k_buffer, v_buffer, req_to_token, req_rows, prefix_lens, extend_lens,
                                    float(scale))
    return out, lse
