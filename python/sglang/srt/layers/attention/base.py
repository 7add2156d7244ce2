"""Attention backend interface: how a RadixAttention layer reads and writes the paged KV cache."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class CaptureSink(Protocol):
    """What the attention backends call on ``ForwardBatch.capture`` when some row of the
    batch captures attention: ``capture.orchestrator.CaptureBatch`` in eager forwards,
    ``cuda_graph_runner.GraphCaptureIO`` while a capture graph is recorded.

    Per layer the backend hands over the post-RoPE queries and the lse its kernel
    computed (``on_layer``); a decode kernel that can compute capture statistics from its
    own probabilities asks ``fused_mask_prefix`` (None: not this layer) and leaves them in
    ``fused_stats[layer_id]`` (the Triton kernel writes into ``stats_buffer``)."""

    fused_stats: dict[int, torch.Tensor]

    def on_layer(self, layer: "RadixAttention", q: torch.Tensor, lse: torch.Tensor | None,
                 fb: "ForwardBatch") -> None: ...

    def fused_mask_prefix(self, layer_id: int) -> torch.Tensor | None: ...

    def stats_buffer(self, layer_id: int, batch_size: int, num_heads: int) -> torch.Tensor: ...


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
        if fb.is_decode and self.decode_writes_kv(layer, fb):
            o, lse = self.forward_decode(q, layer, fb, kv=(k, v))
        else:
            fb.kv_pool.set_kv(layer.layer_id, fb.out_cache_loc, k, v)
            o, lse = self.forward_decode(q, layer, fb) if fb.is_decode else self.forward_extend(q, layer, fb)
        if fb.capture is not None:
            fb.capture.on_layer(layer, q, lse, fb)
        return o.reshape(T, layer.num_heads * layer.head_dim)

    @abstractmethod
    def forward_extend(self, q: torch.Tensor, layer: "RadixAttention",
                       fb: "ForwardBatch") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal attention of the new tokens over prefix + new keys. Returns (o, lse or None)."""

    def decode_writes_kv(self, layer: "RadixAttention", fb: "ForwardBatch") -> bool:
        """True when ``forward_decode`` writes the new tokens' K/V into the cache itself
        (it is then given them as ``kv``)."""
        return False

    @abstractmethod
    def forward_decode(self, q: torch.Tensor, layer: "RadixAttention", fb: "ForwardBatch",
                       kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query per request over all its keys. Returns (o, lse or None). ``kv``: the new
        tokens' k/v [B, Hkv, D], to write first (only where ``decode_writes_kv``)."""
