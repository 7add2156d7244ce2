"""Full attention matrices of one sequence (dense replay): softmax(q k^T * scale) with the
causal mask, for the heads asked, in query-row blocks so the float32 work stays bounded
([heads, block, T] at a time) whatever T is. Same math as ``attention_torch._attend``."""
from __future__ import annotations

import torch

from sgl_kernel.capture_common import softcap_

ROW_BLOCK = 256


def dense_attention_probs(q: torch.Tensor, k: torch.Tensor, *, scale: float, logit_softcap: float = 0.0,
                          head_ids: list[int] | None = None, mean: bool = False,
                          out_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """q [T, Hq, D] (the sequence's queries), k [T, Hkv, D] (its keys, in position order)
    -> [H', T, T] probabilities in ``out_dtype`` (rows: query positions, columns: key
    positions, zero above the diagonal); H' = len(head_ids) (all heads when None), or 1
    with ``mean`` (the mean over those heads)."""
    t, hq, _ = q.shape
    heads = list(range(hq)) if head_ids is None else list(head_ids)
    group = hq // k.shape[1]
    kv = torch.tensor([h // group for h in heads], device=q.device)
    kf = k.float().index_select(1, kv)  # [T, H', D]
    qf = q.float()[:, heads]  # [T, H', D]
    out = torch.zeros(1 if mean else len(heads), t, t, dtype=out_dtype, device=q.device)
    cols = torch.arange(t, device=q.device)
    for r0 in range(0, t, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, t)
        s = softcap_(torch.einsum("mhd,lhd->hml", qf[r0:r1], kf) * scale, logit_softcap)  # [H', m, T]
        rows = torch.arange(r0, r1, device=q.device)
        s = s.masked_fill((cols[None, :] > rows[:, None])[None], -torch.inf)
        p = torch.softmax(s, dim=-1)
        out[:, r0:r1] = (p.mean(0, keepdim=True) if mean else p).to(out_dtype)
    return out
