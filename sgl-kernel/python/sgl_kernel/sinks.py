"""Attention-sink mass: how much of each query row's attention goes to the first positions.

Most decoder LMs park a large share of every head's attention on the first token(s) of the
sequence (an "attention sink"). Given the heads' exact lse over the row's window (capture's
first pass), the probability of a sink key is local: exp(s_j - lse). So the mass on the
first ``n_sink`` positions is one small product with those keys per row, exact, whatever
the context length. Plain torch (a few keys per row); float32 math like the kernels.
"""
from __future__ import annotations

import torch

from sgl_kernel.capture_common import softcap_


def sink_mass(q: torch.Tensor, k_buffer: torch.Tensor, req_to_token: torch.Tensor, row_req: torch.Tensor,
              row_pos: torch.Tensor, *, scale: float, head_lse: torch.Tensor, n_sink: torch.Tensor,
              head_ids: torch.Tensor | None = None, window: torch.Tensor | None = None,
              mask_prefix: torch.Tensor | None = None, logit_softcap: float = 0.0) -> torch.Tensor:
    """[N] head-averaged attention probability on positions j < n_sink[row] that the row
    attends to: j <= t, inside the window (j > t - window when window > 0) and not private
    (j >= mask_prefix). q [N, Hq, D]; head_lse [N, H_sel] over the same window (heads
    ``head_ids``, all when None); n_sink, window, mask_prefix [N] int64."""
    n = q.shape[0]
    s_max = int(n_sink.max()) if n else 0
    if s_max == 0:
        return torch.zeros(n, dtype=torch.float32, device=q.device)
    hq, hkv = q.shape[1], k_buffer.shape[1]
    heads = head_ids if head_ids is not None else torch.arange(hq, device=q.device)
    kv = torch.div(heads, hq // hkv, rounding_mode="floor")
    pos = torch.arange(s_max, device=q.device)
    slots = req_to_token[row_req][:, :s_max].long()  # [N, S]
    k = k_buffer[slots][:, :, kv].float()  # [N, S, H_sel, D]
    s = softcap_(torch.einsum("nhd,nshd->nhs", q[:, heads].float(), k) * scale, logit_softcap)
    p = torch.exp(s - head_lse[:, :, None].float())  # [N, H_sel, S]
    t = row_pos[:, None]
    ok = (pos[None, :] < n_sink[:, None]) & (pos[None, :] <= t)
    if window is not None:
        ok &= (window[:, None] <= 0) | (pos[None, :] > t - window[:, None])
    if mask_prefix is not None:
        ok &= pos[None, :] >= mask_prefix[:, None]
    return (p * ok[:, None, :]).sum(-1).mean(-1)
