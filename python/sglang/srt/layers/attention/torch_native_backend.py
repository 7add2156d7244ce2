"""torch_native backend: gathers each request's keys from the paged cache and runs SDPA.

Runs on CPU and GPU and is the exact reference the Triton backend is tested against.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sglang.srt.layers.attention.base import AttentionBackend

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch


class TorchNativeAttnBackend(AttentionBackend):
    def __init__(self) -> None:
        self._decode_shape = (0, 0)
        self._decode_idx: torch.Tensor | None = None
        self._decode_mask: torch.Tensor | None = None

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        if not fb.is_decode:
            return
        # One padded slot table and key mask for the whole decode batch, shared by all layers.
        max_len = max(fb.seq_lens_cpu)
        table = fb.req_to_token_pool.req_to_token[fb.req_pool_indices, :max_len].long()
        ar = torch.arange(max_len, device=table.device)
        valid = ar.unsqueeze(0) < fb.seq_lens.unsqueeze(1)
        # Flat slot list: index_select is several times faster than advanced indexing on CPU.
        self._decode_idx = torch.where(valid, table, torch.zeros_like(table)).reshape(-1)
        self._decode_shape = (fb.batch_size, max_len)
        self._decode_mask = valid[:, None, None, :]  # [B, 1, 1, S]

    def forward_decode(self, q, layer, fb):
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        idx = self._decode_idx
        B, S = self._decode_shape
        k = k_buf.index_select(0, idx).view(B, S, *k_buf.shape[1:]).transpose(1, 2)  # [B, Hkv, S, D]
        v = v_buf.index_select(0, idx).view(B, S, *v_buf.shape[1:]).transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2), k, v, attn_mask=self._decode_mask, scale=layer.scaling, enable_gqa=True
        )  # [B, Hq, 1, D]
        return o.squeeze(2), None

    def forward_extend(self, q, layer, fb):
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        out = torch.empty_like(q)
        start = 0
        for i in range(fb.batch_size):
            ext, pre = fb.extend_seq_lens_cpu[i], fb.extend_prefix_lens_cpu[i]
            total = ext + pre
            slots = fb.req_to_token_pool.req_to_token[fb.req_pool_indices[i], :total].long()
            k = k_buf.index_select(0, slots).transpose(0, 1).unsqueeze(0)  # [1, Hkv, S, D]
            v = v_buf.index_select(0, slots).transpose(0, 1).unsqueeze(0)
            qi = q[start : start + ext].transpose(0, 1).unsqueeze(0)  # [1, Hq, ext, D]
            if pre == 0:
                o = F.scaled_dot_product_attention(qi, k, v, is_causal=True, scale=layer.scaling, enable_gqa=True)
            else:
                rows = torch.arange(ext, device=q.device).unsqueeze(1) + pre
                cols = torch.arange(total, device=q.device).unsqueeze(0)
                o = F.scaled_dot_product_attention(qi, k, v, attn_mask=cols <= rows, scale=layer.scaling,
                                                   enable_gqa=True)
            out[start : start + ext] = o.squeeze(0).transpose(0, 1)
            start += ext
        return out, None
