"""Decode and extend attention over the paged KV cache, returning each head's lse.

Triton on CUDA tensors, the torch reference elsewhere (``impl`` forces one). The lse is
what capture's first pass would otherwise recompute: pass it to ``decode_capture`` /
``extend_capture`` as ``head_lse`` so capture costs one pass over the keys.
"""
from __future__ import annotations

from typing import Optional

import torch

from sgl_kernel._triton_util import choose_impl

__all__ = ["decode_attention_fwd", "extend_attention_fwd"]


def _check_cache(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o: torch.Tensor,
                 req_to_token: torch.Tensor, qname: str, oname: str) -> None:
    for name, t in ((qname, q), ("k_buffer", k_buffer), ("v_buffer", v_buffer), (oname, o)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a 3-D float tensor")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, {qname} on {q.device}")
    if k_buffer.shape[2] != q.shape[2]:
        raise ValueError(f"k_buffer head dim {k_buffer.shape[2]} != {qname} head dim {q.shape[2]}")
    if v_buffer.shape[:2] != k_buffer.shape[:2] or v_buffer.dtype != k_buffer.dtype:
        raise ValueError("v_buffer must have k_buffer's slots, heads and dtype")
    if k_buffer.shape[1] < 1 or q.shape[1] % k_buffer.shape[1]:
        raise ValueError(f"{qname} heads ({q.shape[1]}) must be a multiple of k_buffer heads ({k_buffer.shape[1]})")
    if o.shape != (q.shape[0], q.shape[1], v_buffer.shape[2]):
        raise ValueError(f"{oname} must have shape {[q.shape[0], q.shape[1], v_buffer.shape[2]]}")
    if not isinstance(req_to_token, torch.Tensor) or req_to_token.dim() != 2 or req_to_token.dtype.is_floating_point:
        raise ValueError("req_to_token must be an integer tensor [R, max_ctx]")


def _check_batch(req_to_token: torch.Tensor, **per_req: torch.Tensor) -> int:
    n = None
    for name, t in per_req.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a 1-D integer tensor [B]")
        if n is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} entries, expected {n}")
        n = t.shape[0]
    rp, sl = per_req["req_pool_indices"], per_req["seq_lens"]
    if n:
        if int(rp.min()) < 0 or int(rp.max()) >= req_to_token.shape[0]:
            raise ValueError(f"req_pool_indices must index req_to_token's {req_to_token.shape[0]} rows")
        if int(sl.min()) < 1 or int(sl.max()) > req_to_token.shape[1]:
            raise ValueError(f"seq_lens must be in [1, {req_to_token.shape[1]}]")
    return int(n or 0)


def decode_attention_fwd(
    q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o: torch.Tensor,
    req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor, *,
    scale: float, logit_softcap: float = 0.0, num_kv_splits: int = 8, return_lse: bool = False,
    impl: str = "auto",
) -> Optional[torch.Tensor]:
    """One query per request (q [B, Hq, D]) over keys 0..seq_len-1; writes o [B, Hq, Dv].

    Returns lse [B, Hq] (float32) when return_lse, else None.
    """
    _check_cache(q, k_buffer, v_buffer, o, req_to_token, "q", "o")
    b = _check_batch(req_to_token, req_pool_indices=req_pool_indices, seq_lens=seq_lens)
    if b != q.shape[0]:
        raise ValueError(f"q has {q.shape[0]} rows but the batch has {b} requests")
    if isinstance(num_kv_splits, bool) or not isinstance(num_kv_splits, int) or num_kv_splits < 1:
        raise ValueError(f"num_kv_splits must be an integer >= 1, got {num_kv_splits!r}")
    if choose_impl(impl, q) == "triton":
        from sgl_kernel import attention_triton as mod

        return mod.decode_attention_fwd(q, k_buffer, v_buffer, o, req_to_token, req_pool_indices, seq_lens,
                                        scale=scale, logit_softcap=logit_softcap, num_kv_splits=num_kv_splits,
                                        return_lse=return_lse)
    from sgl_kernel import attention_torch as ref

    return ref.decode_attention_fwd(q, k_buffer, v_buffer, o, req_to_token, req_pool_indices, seq_lens,
                                    scale=scale, logit_softcap=logit_softcap, return_lse=return_lse)


def extend_attention_fwd(
    q_extend: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o_extend: torch.Tensor,
    req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor, extend_start_loc: torch.Tensor, *,
    scale: float, logit_softcap: float = 0.0, return_lse: bool = False, impl: str = "auto",
) -> Optional[torch.Tensor]:
    """Causal attention of the new tokens of each request (their K/V already in the cache).

    Request b's rows are q_extend[extend_start_loc[b] : + extend_seq_lens[b]] at logical
    positions seq_lens[b] - extend_seq_lens[b] + i. Writes o_extend [T, Hq, Dv]; returns
    lse [T, Hq] (float32) when return_lse, else None.
    """
    _check_cache(q_extend, k_buffer, v_buffer, o_extend, req_to_token, "q_extend", "o_extend")
    _check_batch(req_to_token, req_pool_indices=req_pool_indices, seq_lens=seq_lens,
                 extend_seq_lens=extend_seq_lens, extend_start_loc=extend_start_loc)
    if extend_seq_lens.numel():
        if int(extend_seq_lens.min()) < 0 or bool((extend_seq_lens > seq_lens).any()):
            raise ValueError("extend_seq_lens must be in [0, seq_lens]")
        if int(extend_start_loc.min()) < 0 or int((extend_start_loc + extend_seq_lens).max()) > q_extend.shape[0]:
            raise ValueError("extend_start_loc + extend_seq_lens run past q_extend's rows")
    if choose_impl(impl, q_extend) == "triton":
        from sgl_kernel import attention_triton as mod

        return mod.extend_attention_fwd(q_extend, k_buffer, v_buffer, o_extend, req_to_token, req_pool_indices,
                                        seq_lens, extend_seq_lens, extend_start_loc, scale=scale,
                                        logit_softcap=logit_softcap, return_lse=return_lse)
    from sgl_kernel import attention_torch as ref

    return ref.extend_attention_fwd(q_extend, k_buffer, v_buffer, o_extend, req_to_token, req_pool_indices,
                                    seq_lens, extend_seq_lens, extend_start_loc, scale=scale,
                                    logit_softcap=logit_softcap, return_lse=return_lse)
