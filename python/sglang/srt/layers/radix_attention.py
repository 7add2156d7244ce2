"""The attention layer models use: it owns no weights, only the layer's shape, and
delegates to the batch's attention backend (which also runs capture)."""
from __future__ import annotations

import torch
from torch import nn

from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class RadixAttention(nn.Module):
    def __init__(self, layer_id: int, num_heads: int, num_kv_heads: int, head_dim: int, scaling: float,
                 logit_softcap: float = 0.0) -> None:
        super().__init__()
        self.layer_id, self.num_heads, self.num_kv_heads = layer_id, num_heads, num_kv_heads
        self.head_dim, self.scaling, self.logit_softcap = head_dim, scaling, logit_softcap

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        return fb.attn_backend.forward(q, k, v, self, fb)
