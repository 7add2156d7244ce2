"""Attention backend interface: how a RadixAttention layer reads and writes the paged KV cache."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class AttentionBackend(ABC):
    """One instance per model runner. ``init_forward_metadata`` runs once per batch,
    ``forward_extend`` / ``forward_decode`` once per layer."""

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:  # noqa: B027 - optional hook
        pass

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: "RadixAttention",
                fb: "ForwardBatch") -> torch.Tensor:
        """q: [T, Hq*D], k/v: [T, Hkv*D] (new tokens). Writes k/v to the cache, returns [T, Hq*D]."""
        T = q.shape[0]
        q = q.view(T, layer.num_heads, layer.head_dim)
        k = k.view(T, layer.num_kv_heads, layer.head_dim)
        v = v.view(T, layer.num_kv_heads, layer.head_dim)
        fb.kv_pool.set_kv(layer.layer_id, fb.out_cache_loc, k, v)
        if fb.is_decode:
            o, lse = self.forward_decode(q, layer, fb)
        else:
            o, lse = self.forward_extend(q, layer, fb)
        if fb.capture is not None:
            fb.capture.on_layer(layer, q, lse, fb)
        return o.reshape(T, layer.num_heads * layer.head_dim)

    @abstractmethod
    def forward_extend(self, q: torch.Tensor, layer: "RadixAttention",
                       fb: "ForwardBatch") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal attention of the new tokens over prefix + new keys. Returns (o, lse or None)."""

    @abstractmethod
    def forward_decode(self, q: torch.Tensor, layer: "RadixAttention",
                       fb: "ForwardBatch") -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query per request over all its keys. Returns (o, lse or None)."""
