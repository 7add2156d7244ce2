"""torch_native backend: gathers each request's keys from the paged cache and runs SDPA.

Decode and prefill on CPU with a float32 cache instead run sgl_kernel's C++ paged kernels,
which read the pool in place (no padded gather); ``SGLANG_CPU_DECODE_ATTENTION=sdpa`` turns
them off.

Runs on CPU and GPU and is the exact reference the Triton backend is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sglang.srt.layers.attention.base import AttentionBackend

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch


# Decode pads every request of a bucket to the bucket's longest context. Sorting by
# length and starting a new bucket when a request is shorter than this fraction of the
# bucket's longest keeps the padded keys within ~1/0.75 of the real ones, so a batch of
# mixed lengths (16..400 tokens) reads about half the keys a single padded batch reads.
_BUCKET_FILL = 0.75
_MAX_BUCKETS = 4


@dataclass
class _DecodeBucket:
    rows: torch.Tensor | None  # batch rows of this bucket; None = the whole batch, in order
    kv_rows: torch.Tensor  # [B_b * Hkv * S] rows of the pool viewed as [slots * Hkv, D]
    mask: torch.Tensor  # [B_b, 1, 1, S] True for real keys
    shape: tuple[int, int, int]  # (B_b, Hkv, S)


def _decode_buckets(lens: list[int]) -> list[list[int]]:
    order = sorted(range(len(lens)), key=lambda i: -lens[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and (lens[i] >= _BUCKET_FILL * lens[buckets[-1][0]] or len(buckets) == _MAX_BUCKETS):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


class TorchNativeAttnBackend(AttentionBackend):
    def __init__(self, device: torch.device | None = None, kv_dtype: torch.dtype | None = None,
                 cpp_decode: bool | None = None) -> None:
        """cpp_decode: decode through sgl_kernel's C++ paged kernel (float32 KV on CPU,
        where it builds; decided here so the one-time build happens before serving).
        None = use it when it applies."""
        self._buckets: list[_DecodeBucket] = []
        if cpp_decode is None:
            cpp_decode = device is not None and device.type == "cpu" and kv_dtype == torch.float32
            if cpp_decode:
                from sgl_kernel import attention_cpu

                cpp_decode = attention_cpu.available()
        self.cpp_decode = cpp_decode
        if cpp_decode:
            from sgl_kernel.attention_cpu import decode_attention, extend_attention

            self._cpp_decode = decode_attention
            self._cpp_extend = extend_attention

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        if not fb.is_decode:
            return
        if self.cpp_decode:  # reads the pool in place: nothing to prepare
            return
        # The gather tables are built once per step and shared by all layers. Keys are
        # gathered head-major ([B, Hkv, S, D] contiguous, one row per (slot, head)): SDPA
        # on CPU is ~20% faster on contiguous per-head keys than on a transposed view.
        num_kv_heads = fb.kv_pool.get_kv(0)[0].shape[1]
        heads = torch.arange(num_kv_heads, device=fb.seq_lens.device).view(1, -1, 1)
        self._buckets = []
        groups = _decode_buckets(fb.seq_lens_cpu)
        if len(groups) == 1:  # one bucket: keep the batch order, no scatter back
            groups = [list(range(fb.batch_size))]
        for group in groups:
            rows = torch.tensor(group, device=fb.seq_lens.device)
            max_len = max(fb.seq_lens_cpu[i] for i in group)
            table = fb.req_to_token_pool.req_to_token[fb.req_pool_indices[rows], :max_len].long()
            valid = torch.arange(max_len, device=table.device).unsqueeze(0) < fb.seq_lens[rows].unsqueeze(1)
            slots = torch.where(valid, table, torch.zeros_like(table))
            kv_rows = (slots.unsqueeze(1) * num_kv_heads + heads).reshape(-1)
            self._buckets.append(_DecodeBucket(None if len(groups) == 1 else rows, kv_rows, valid[:, None, None, :],
                                               (len(group), num_kv_heads, max_len)))

    def decode_writes_kv(self, layer, fb):
        # the C++ kernel copies the new rows into a float32 pool (the kernel's only dtype)
        return self.cpp_decode and fb.kv_pool.get_kv(layer.layer_id)[0].dtype == torch.float32

    def forward_decode(self, q, layer, fb, kv=None):
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        if self.cpp_decode:
            decode_attention = self._cpp_decode
            args = (q, k_buf, v_buf, fb.req_to_token_pool.req_to_token, fb.req_pool_indices, fb.seq_lens,
                    layer.scaling)
            new = None if kv is None else (kv[0], kv[1], fb.out_cache_loc)
            mp = fb.capture.fused_mask_prefix(layer.layer_id) if fb.capture is not None else None
            if mp is None or layer.logit_softcap:
                return decode_attention(*args, kv=new)
            # fingerprint capture from the kernel's own probabilities: no second read of K
            o, lse, stats = decode_attention(*args, mask_prefix=mp, per_head=True, kv=new)
            fb.capture.fused_stats[layer.layer_id] = stats  # [B, Hq, 18]
            return o, lse
        k_rows, v_rows = k_buf.view(-1, k_buf.shape[-1]), v_buf.view(-1, v_buf.shape[-1])
        out = None if self._buckets[0].rows is None else torch.empty_like(q)
        for b in self._buckets:
            k = k_rows.index_select(0, b.kv_rows).view(*b.shape, -1)  # [B_b, Hkv, S, D]
            v = v_rows.index_select(0, b.kv_rows).view(*b.shape, -1)
            qb = q if b.rows is None else q.index_select(0, b.rows)
            o = F.scaled_dot_product_attention(
                qb.unsqueeze(2), k, v, attn_mask=b.mask, scale=layer.scaling, enable_gqa=True
            ).squeeze(2)  # [B_b, Hq, D]
            if b.rows is None:
                return o, None
            out.index_copy_(0, b.rows, o)
        return out, None

    def forward_extend(self, q, layer, fb):
        k_buf, v_buf = fb.kv_pool.get_kv(layer.layer_id)
        if self.cpp_decode and q.dtype == torch.float32 and k_buf.dtype == torch.float32:
            # the C++ kernel reads the pool in place (one call per layer, not a gather,
            # transposes and an SDPA call per request); its lse stays unused as SDPA's would
            out, _ = self._cpp_extend(q, k_buf, v_buf, fb.req_to_token_pool.req_to_token, fb.req_pool_indices,
                                      fb.extend_prefix_lens, fb.extend_seq_lens, layer.scaling)
            return out, None
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
