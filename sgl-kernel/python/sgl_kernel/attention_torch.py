"""Plain-torch decode and extend attention over the paged cache (float32 math).

The reference the Triton kernels are tested against. It gathers each request's keys,
so it is simple rather than frugal; extend rows go in blocks to bound the score tile.
"""
from __future__ import annotations

import torch

from sgl_kernel.capture_common import softcap_

_ROW_BLOCK = 256


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
            scale: float, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q [m, Hq, D], k [L, Hkv, D], v [L, Hkv, Dv], allowed [m, L] -> (o [m, Hq, Dv], lse [m, Hq])."""
    group = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)  # [L, Hq, D]
    vf = v.float().repeat_interleave(group, dim=1)
    s = softcap_(torch.einsum("mhd,lhd->mhl", q.float(), kf) * scale, cap)
    if allowed is not None:
        s = s.masked_fill(~allowed[:, None, :], -torch.inf)
    lse = torch.logsumexp(s, dim=2)
    p = torch.exp(s - lse[:, :, None])
    return torch.einsum("mhl,lhd->mhd", p, vf), lse


def decode_attention_fwd(q, k_buffer, v_buffer, o, req_to_token, req_pool_indices, seq_lens, *,
                         scale: float, logit_softcap: float = 0.0, return_lse: bool = False):
    lse_out = torch.empty(q.shape[0], q.shape[1], dtype=torch.float32, device=q.device)
    for b, (r, n) in enumerate(zip(req_pool_indices.tolist(), seq_lens.tolist())):
        slots = req_to_token[r, :n].long()
        ob, lb = _attend(q[b : b + 1], k_buffer[slots], v_buffer[slots], None, scale, logit_softcap)
        o[b] = ob[0].to(o.dtype)
        lse_out[b] = lb[0]
    return lse_out if return_lse else None


def extend_attention_fwd(q_extend, k_buffer, v_buffer, o_extend, req_to_token, req_pool_indices, seq_lens,
                         extend_seq_lens, extend_start_loc, *, scale: float, logit_softcap: float = 0.0,
                         return_lse: bool = False):
    lse_out = torch.empty(q_extend.shape[0], q_extend.shape[1], dtype=torch.float32, device=q_extend.device)
    for r, n, e, st in zip(req_pool_indices.tolist(), seq_lens.tolist(), extend_seq_lens.tolist(),
                           extend_start_loc.tolist()):
        pre = n - e
        slots = req_to_token[r, :n].long()
        k, v = k_buffer[slots], v_buffer[slots]
        cols = torch.arange(n, device=q_extend.device)
        for m0 in range(0, e, _ROW_BLOCK):
            m1 = min(m0 + _ROW_BLOCK, e)
            rows = torch.arange(pre + m0, pre + m1, device=q_extend.device)
            ob, lb = _attend(q_extend[st + m0 : st + m1], k, v, cols[None, :] <= rows[:, None], scale,
                             logit_softcap)
            o_extend[st + m0 : st + m1] = ob.to(o_extend.dtype)
            lse_out[st + m0 : st + m1] = lb
    return lse_out if return_lse else None
