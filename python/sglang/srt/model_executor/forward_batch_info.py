"""ForwardBatch: the tensors one model forward needs, built by the scheduler each step."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from sglang.srt.layers.attention.base import AttentionBackend, CaptureSink
    from sglang.srt.mem_cache.memory_pool import KVPool, ReqToTokenPool


class LensSink(Protocol):
    """What the model calls on ``ForwardBatch.lens`` (logit lens, see
    ``capture.logit_lens``): after each layer in ``layers``, the layer's output and its
    residual (the residual stream is their sum)."""

    layers: frozenset[int]

    def keep(self, layer_id: int, hidden: torch.Tensor, residual: torch.Tensor | None) -> None: ...


class ForwardMode(Enum):
    EXTEND = 1  # prefill of new tokens (possibly after a cached prefix or an earlier chunk)
    DECODE = 2  # one new token per request


@dataclass
class ForwardBatch:
    mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T] logical positions
    req_pool_indices: torch.Tensor  # [B]
    seq_lens: torch.Tensor  # [B] tokens with KV after this forward
    out_cache_loc: torch.Tensor  # [T] KV slots written by this forward
    req_to_token_pool: "ReqToTokenPool"
    kv_pool: "KVPool"
    attn_backend: "AttentionBackend"
    # EXTEND only
    extend_seq_lens: torch.Tensor | None = None  # [B]
    extend_prefix_lens: torch.Tensor | None = None  # [B]
    extend_start_loc: torch.Tensor | None = None  # [B]
    # host copies (avoid device syncs in per-request loops)
    seq_lens_cpu: list[int] = field(default_factory=list)
    extend_seq_lens_cpu: list[int] = field(default_factory=list)
    extend_prefix_lens_cpu: list[int] = field(default_factory=list)
    # Rows whose logits are needed: index into the T tokens (last token of each request).
    logits_indices: torch.Tensor | None = None
    # Attention capture for this batch, None when no request captures (see CaptureSink).
    capture: "CaptureSink | None" = None
    # Logit lens rows of this batch, None when no request asks for it (see LensSink).
    lens: "LensSink | None" = None

    @property
    def is_decode(self) -> bool:
        return self.mode == ForwardMode.DECODE
