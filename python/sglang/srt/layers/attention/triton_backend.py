"""triton backend: sgl-kernel's Triton decode/extend kernels over the paged KV cache.

The kernels hand back each head's lse next to the output; the base class passes it to
capture (``fb.capture.on_layer``), which can then skip its own lse pass, so a capturing
row costs one extra pass over its keys and a non-capturing batch pays nothing.

The raw kernel modules are called directly instead of ``sgl_kernel.attention``'s checked
wrappers: the wrappers validate with ``int(tensor.min())`` (a device sync per layer) and
would make decode impossible to record in a CUDA graph. The scheduler builds the batch
tensors, so they are valid by construction.

On CPU tensors Triton only runs under its interpreter (``TRITON_INTERPRET=1``, read when
the kernel module is first imported): that is for tests on tiny models, not for speed.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from sglang.srt.layers.attention.base import AttentionBackend

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

MAX_KV_SPLITS = 16
CPU_KV_SPLITS = 2  # interpreter: every program is Python, keep the grid small


def _interpreting() -> bool:
    from sgl_kernel._triton_util import interpreting

    return interpreting()


def decode_kv_splits(batch_size: int, num_kv_heads: int, sm_count: int) -> int:
    """Key splits per request for split-KV decode: enough programs to fill every SM about
    twice at small batches (batch 1 of a 2-KV-head model would otherwise use 16 programs),
    no more than MAX_KV_SPLITS (each split adds a partial result to merge)."""
    programs = max(1, batch_size * num_kv_heads)
    want = math.ceil(2 * sm_count / programs)
    return int(min(MAX_KV_SPLITS, max(4, 1 << (want - 1).bit_length())))


class TritonAttnBackend(AttentionBackend):
    def __init__(self, device: torch.device) -> None:
        from sgl_kernel._triton_util import triton_importable

        if not triton_importable():
            raise ValueError("--attention-backend triton needs the triton package (pip install triton)")
        if device.type != "cuda" and not _interpreting():
            raise ValueError("--attention-backend triton needs a CUDA device "
                             "(on CPU only under TRITON_INTERPRET=1, which is for tests)")
        from sgl_kernel import attention_triton

        self._k = attention_triton
        self.device = device
        self.sm_count = (torch.cuda.get_device_properties(device).multi_processor_count
                         if device.type == "cuda" else 0)

    def num_kv_splits(self, batch_size: int, num_kv_heads: int) -> int:
        """Fixed for a given batch size, so a CUDA graph recorded at that size stays valid."""
        if self.device.type != "cuda":
            return CPU_KV_SPLITS
        return decode_kv_splits(batch_size, num_kv_heads, self.sm_count)

    def forward_decode(self, q: torch.Tensor, layer: "RadixAttention", fb: "ForwardBatch",
                       kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert kv is None  # the cache is written before (decode_writes_kv is False)
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        o = torch.empty(q.shape[0], q.shape[1], v_buf.shape[2], dtype=q.dtype, device=q.device)
        # fingerprint capture: the kernel also computes the statistics from its own
        # probabilities (no second pass over the keys; fixed shapes, so CUDA graphs work)
        capture = fb.capture
        mp: torch.Tensor | None = None
        stats: torch.Tensor | None = None
        if capture is not None:
            mp = capture.fused_mask_prefix(layer.layer_id)
            if mp is not None:
                stats = capture.stats_buffer(layer.layer_id, q.shape[0], q.shape[1])
        lse = self._k.decode_attention_fwd(
            q, k_buf, v_buf, o, fb.req_to_token_pool.req_to_token, fb.req_pool_indices, fb.seq_lens,
            scale=layer.scaling, logit_softcap=layer.logit_softcap,
            num_kv_splits=self.num_kv_splits(q.shape[0], layer.num_kv_heads),
            return_lse=capture is not None, mask_prefix=mp, stats=stats,
        )
        if capture is not None and stats is not None:
            capture.fused_stats[layer.layer_id] = stats
        return o, lse

    def forward_extend(self, q: torch.Tensor, layer: "RadixAttention",
                       fb: "ForwardBatch") -> tuple[torch.Tensor, torch.Tensor | None]:
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        o = torch.empty(q.shape[0], q.shape[1], v_buf.shape[2], dtype=q.dtype, device=q.device)
        lse = self._k.extend_attention_fwd(
            q, k_buf, v_buf, o, fb.req_to_token_pool.req_to_token, fb.req_pool_indices, fb.seq_lens,
            fb.extend_seq_lens, fb.extend_start_loc,
            scale=layer.scaling, logit_softcap=layer.logit_softcap, return_lse=fb.capture is not None,
        )
        return o, lse
