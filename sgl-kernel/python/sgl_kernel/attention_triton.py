"""Triton decode (split-KV, two stages) and extend attention over the paged cache.

Both return each head's lse next to the output, which is what lets capture skip its
first pass. Modelled on SGLang's kernels: decode handles all query heads of one KV head
in one program (GQA), splits each request's keys across ``num_kv_splits`` programs and
merges the partial results in a second kernel; extend walks a block of query rows of one
head over the request's keys with the causal mask. Queries are cast to the cache's dtype (the
cache is never copied); a float32 cache uses IEEE dots (no TF32), a 16-bit one multiplies
in its own precision; scores, softmax and accumulators are float32.

Decode can also compute, from its own probabilities, the capture statistics of every
row and head (``stats``: distance histogram of the unmasked keys, masked mass and entropy,
docs/architecture.md#capture-definitions). They are accumulated online like the softmax sum, rescaled
when the running max moves, and merged across key splits with the same weights as the
output, so fingerprint capture needs no second pass over the keys and, having fixed
shapes, can be recorded in a CUDA graph.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sgl_kernel._triton_util import next_pow2
from sgl_kernel.capture_common import STATS_DIM


@triton.jit
def _cap(s, softcap, HAS_CAP: tl.constexpr):
    if HAS_CAP:
        s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0))
    return s


@triton.jit
def _online_softmax_step(m, l, acc, s, v, FP32: tl.constexpr):
    """One key tile of streaming softmax-attention: fold scores s [M, N] and values
    v [N, DV] into the running max m, sum l and output accumulator acc."""
    m_new = tl.maximum(m, tl.max(s, axis=1))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new[:, None])
    l = l * alpha + tl.sum(p, axis=1)
    if FP32:
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l, acc, p, alpha


@triton.jit
def _stats_step(hist, masked, ps, p, s, alpha, pos, valid, query_pos, mask_prefix):
    """Fold one tile's unnormalised probabilities p [M, N] (relative to the running max,
    which alpha just rescaled) into the distance histogram of unmasked keys [M, 16], the
    masked mass [M] and sum p*s [M] (entropy = lse - sum p s)."""
    d = query_pos - pos
    bins = tl.zeros_like(d)
    for e in tl.static_range(1, 16):  # floor(log2 d) for d >= 2, 0 below, capped at 15: exact integers
        bins += (d >= (1 << e)).to(d.dtype)
    open_ = valid & (pos >= mask_prefix)
    onehot = ((bins[:, None] == tl.arange(0, 16)[None, :]) & open_[:, None]).to(tl.float32)
    hist = hist * alpha[:, None] + tl.dot(p, onehot, input_precision="ieee")
    masked = masked * alpha + tl.sum(tl.where((valid & (pos < mask_prefix))[None, :], p, 0.0), axis=1)
    ps = ps * alpha + tl.sum(p * tl.where(valid[None, :], s, 0.0), axis=1)
    return hist, masked, ps


@triton.jit
def _decode_stage1(
    Q, K, V, ReqToToken, ReqPool, SeqLens, MidO, MidLse, MaskPrefix, MidStats,
    stride_qb, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_rt,
    stride_mb, stride_mh, stride_ms, stride_lb, stride_lh,
    n_splits, n_heads_q, D, DV, GROUP, scale, softcap,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_CAP: tl.constexpr, FP32: tl.constexpr, STATS: tl.constexpr,
):
    b = tl.program_id(0)
    g = tl.program_id(1)
    sp = tl.program_id(2)
    seq_len = tl.load(SeqLens + b)
    r = tl.load(ReqPool + b).to(tl.int64)
    split_len = tl.cdiv(seq_len, n_splits)
    start = sp * split_len
    end = tl.minimum(start + split_len, seq_len)
    offs_h = tl.arange(0, BLOCK_H)
    mask_h = offs_h < GROUP
    heads = g * GROUP + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_h[:, None] & (offs_d[None, :] < D), other=0.0)
    m = tl.full([BLOCK_H], -float("inf"), tl.float32)
    l = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_DV], tl.float32)
    hist = tl.zeros([BLOCK_H, 16], tl.float32)
    masked = tl.zeros([BLOCK_H], tl.float32)
    ps = tl.zeros([BLOCK_H], tl.float32)
    mask_prefix = 0
    if STATS:
        mask_prefix = tl.load(MaskPrefix + b)
    for j0 in range(start, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        mask_n = offs < end
        slots = tl.load(ReqToToken + r * stride_rt + offs, mask=mask_n, other=0).to(tl.int64)
        k = tl.load(K + slots[None, :] * stride_ks + g * stride_kh + offs_d[:, None],
                    mask=mask_n[None, :] & (offs_d[:, None] < D), other=0.0)  # [BLOCK_D, BLOCK_N]
        if FP32:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = _cap(s * scale, softcap, HAS_CAP)
        s = tl.where(mask_n[None, :], s, -float("inf"))
        # the running max stays finite: the tile has >= 1 key
        v = tl.load(V + slots[:, None] * stride_vs + g * stride_vh + offs_dv[None, :],
                    mask=mask_n[:, None] & (offs_dv[None, :] < DV), other=0.0)
        m, l, acc, p, alpha = _online_softmax_step(m, l, acc, s, v, FP32)
        if STATS:
            hist, masked, ps = _stats_step(hist, masked, ps, p, s, alpha, offs, mask_n, seq_len - 1, mask_prefix)
    has = l > 0  # an empty split (short sequence) contributes nothing
    inv = 1.0 / tl.where(has, l, 1.0)
    o = tl.where(has[:, None], acc * inv[:, None], 0.0)
    lse = tl.where(has, m + tl.log(tl.where(has, l, 1.0)), -float("inf"))
    base = b * stride_mb + heads * stride_mh + sp * stride_ms
    tl.store(MidO + base[:, None] + offs_dv[None, :], o, mask=mask_h[:, None] & (offs_dv[None, :] < DV))
    tl.store(MidLse + b * stride_lb + heads * stride_lh + sp, lse, mask=mask_h)
    if STATS:  # this split's statistics, normalised by its own sum (merged like o)
        sbase = ((b * n_heads_q + heads) * n_splits + sp) * 18
        offs16 = tl.arange(0, 16)
        tl.store(MidStats + sbase[:, None] + offs16[None, :], tl.where(has[:, None], hist * inv[:, None], 0.0),
                 mask=mask_h[:, None])
        tl.store(MidStats + sbase + 16, tl.where(has, masked * inv, 0.0), mask=mask_h)
        tl.store(MidStats + sbase + 17, tl.where(has, ps * inv, 0.0), mask=mask_h)


@triton.jit
def _decode_stage2(
    MidO, MidLse, O, Lse, MidStats, Stats,
    stride_mb, stride_mh, stride_ms, stride_lb, stride_lh, stride_ob, stride_oh, stride_sb, stride_sh,
    n_splits, DV,
    BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, STATS: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    n_heads = tl.num_programs(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_s = offs_s < n_splits
    lse_base = b * stride_lb + h * stride_lh
    lse = tl.load(MidLse + lse_base + offs_s, mask=mask_s, other=-float("inf"))
    big = tl.max(lse, axis=0)  # finite: the split holding key 0 is never empty
    w = tl.exp(lse - big)
    total = tl.sum(w, axis=0)
    o = tl.load(MidO + b * stride_mb + h * stride_mh + offs_s[:, None] * stride_ms + offs_dv[None, :],
                mask=mask_s[:, None] & (offs_dv[None, :] < DV), other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / total
    tl.store(O + b * stride_ob + h * stride_oh + offs_dv, out.to(O.dtype.element_ty), mask=offs_dv < DV)
    lse_all = big + tl.log(total)
    tl.store(Lse + b * n_heads + h, lse_all)
    if STATS:
        wn = w / total
        offs16 = tl.arange(0, 16)
        sbase = ((b * n_heads + h) * n_splits + offs_s) * 18
        hs = tl.load(MidStats + sbase[:, None] + offs16[None, :], mask=mask_s[:, None], other=0.0)
        ms = tl.load(MidStats + sbase + 16, mask=mask_s, other=0.0)
        pss = tl.load(MidStats + sbase + 17, mask=mask_s, other=0.0)
        dst = Stats + b * stride_sb + h * stride_sh
        tl.store(dst + offs16, tl.sum(hs * wn[:, None], axis=0))
        tl.store(dst + 16, tl.sum(ms * wn, axis=0))
        tl.store(dst + 17, tl.maximum(lse_all - tl.sum(pss * wn, axis=0), 0.0))  # rounding can dip below 0


def _interpreter_safe(k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton interpreter's tl.dot gives garbage for bfloat16 (triton 3.9): on CPU
    tensors (interpreter only, tiny test shapes) run a bfloat16 cache in float32."""
    if not k_buffer.is_cuda and k_buffer.dtype == torch.bfloat16:
        return k_buffer.float(), v_buffer.float()
    return k_buffer, v_buffer


def decode_attention_fwd(q, k_buffer, v_buffer, o, req_to_token, req_pool_indices, seq_lens, *,
                         scale: float, logit_softcap: float = 0.0, num_kv_splits: int = 8,
                         return_lse: bool = False, mask_prefix: torch.Tensor | None = None,
                         stats: torch.Tensor | None = None):
    """Writes o; returns lse [B, Hq] when return_lse. With ``stats`` (float32 [B, Hq, 18],
    last dim contiguous) and ``mask_prefix`` (int [B]) it also fills, per row and head,
    hist[16] of the keys at positions >= mask_prefix, their masked mass and the entropy."""
    bsz, hq, d = q.shape
    hkv, dv = k_buffer.shape[1], v_buffer.shape[2]
    group = hq // hkv
    dev = q.device
    lse = torch.empty(bsz, hq, dtype=torch.float32, device=dev)
    if bsz == 0:
        return lse if return_lse else None
    mid_o = torch.empty(bsz, hq, num_kv_splits, dv, dtype=torch.float32, device=dev)
    mid_lse = torch.empty(bsz, hq, num_kv_splits, dtype=torch.float32, device=dev)
    with_stats = stats is not None
    if with_stats:
        if mask_prefix is None or tuple(stats.shape) != (bsz, hq, STATS_DIM) or stats.dtype != torch.float32 \
                or stats.stride(2) != 1:
            raise ValueError(f"stats must be a float32 tensor [{bsz}, {hq}, {STATS_DIM}] (with mask_prefix [B])")
        mid_stats = torch.empty(bsz, hq, num_kv_splits, STATS_DIM, dtype=torch.float32, device=dev)
    else:
        mid_stats = stats = mid_lse  # unused pointers
        mask_prefix = seq_lens
    k_buffer, v_buffer = _interpreter_safe(k_buffer, v_buffer)
    q = q.to(k_buffer.dtype)  # dots need one dtype: the cache's (never copy the cache)
    fp32 = k_buffer.dtype == torch.float32
    cap = float(logit_softcap)
    _decode_stage1[(bsz, hkv, num_kv_splits)](
        q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens, mid_o, mid_lse, mask_prefix, mid_stats,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        req_to_token.stride(0), mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        num_kv_splits, hq, d, dv, group, float(scale), cap if cap > 0 else 1.0,
        BLOCK_H=max(16, next_pow2(group)), BLOCK_N=32, BLOCK_D=max(16, next_pow2(d)),
        BLOCK_DV=max(16, next_pow2(dv)), HAS_CAP=cap > 0, FP32=fp32, STATS=with_stats,
    )
    _decode_stage2[(bsz, hq)](
        mid_o, mid_lse, o, lse, mid_stats, stats,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        o.stride(0), o.stride(1), stats.stride(0) if with_stats else 0, stats.stride(1) if with_stats else 0,
        num_kv_splits, dv, BLOCK_S=next_pow2(num_kv_splits), BLOCK_DV=next_pow2(dv), STATS=with_stats,
    )
    return lse if return_lse else None


@triton.jit
def _extend_kernel(
    Q, K, V, O, Lse, ReqToToken, ReqPool, SeqLens, ExtLens, ExtStart,
    stride_qt, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_ot, stride_oh, stride_rt,
    D, DV, GROUP, scale, softcap,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_CAP: tl.constexpr, FP32: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    mb = tl.program_id(2)
    n_heads = tl.num_programs(1)
    seq_len = tl.load(SeqLens + b)
    ext = tl.load(ExtLens + b)
    if mb * BLOCK_M >= ext:
        return
    st = tl.load(ExtStart + b)
    r = tl.load(ReqPool + b).to(tl.int64)
    pre = seq_len - ext
    g = h // GROUP
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < ext
    qpos = pre + offs_m
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    rows = (st + offs_m).to(tl.int64)
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & (offs_d[None, :] < D), other=0.0)
    m = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    end = tl.minimum(seq_len, pre + (mb + 1) * BLOCK_M)  # the last key any row here may see
    for j0 in range(0, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        mask_n = offs < end
        slots = tl.load(ReqToToken + r * stride_rt + offs, mask=mask_n, other=0).to(tl.int64)
        k = tl.load(K + slots[None, :] * stride_ks + g * stride_kh + offs_d[:, None],
                    mask=mask_n[None, :] & (offs_d[:, None] < D), other=0.0)
        if FP32:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = _cap(s * scale, softcap, HAS_CAP)
        # causal; key 0 is in the first tile and visible to every row, so m stays finite
        s = tl.where(mask_n[None, :] & (offs[None, :] <= qpos[:, None]), s, -float("inf"))
        v = tl.load(V + slots[:, None] * stride_vs + g * stride_vh + offs_dv[None, :],
                    mask=mask_n[:, None] & (offs_dv[None, :] < DV), other=0.0)
        m, l, acc, _, _ = _online_softmax_step(m, l, acc, s, v, FP32)
    o = acc / l[:, None]
    tl.store(O + rows[:, None] * stride_ot + h * stride_oh + offs_dv[None, :], o.to(O.dtype.element_ty),
             mask=mask_m[:, None] & (offs_dv[None, :] < DV))
    tl.store(Lse + rows * n_heads + h, m + tl.log(l), mask=mask_m)


def extend_attention_fwd(q_extend, k_buffer, v_buffer, o_extend, req_to_token, req_pool_indices, seq_lens,
                         extend_seq_lens, extend_start_loc, *, scale: float, logit_softcap: float = 0.0,
                         return_lse: bool = False, block_m: int = 32):
    t, hq, d = q_extend.shape
    hkv, dv = k_buffer.shape[1], v_buffer.shape[2]
    dev = q_extend.device
    lse = torch.empty(t, hq, dtype=torch.float32, device=dev)
    bsz = seq_lens.shape[0]
    if t == 0 or bsz == 0:
        return lse if return_lse else None
    max_ext = int(extend_seq_lens.max())
    k_buffer, v_buffer = _interpreter_safe(k_buffer, v_buffer)
    q = q_extend.to(k_buffer.dtype)  # dots need one dtype: the cache's (never copy the cache)
    fp32 = k_buffer.dtype == torch.float32
    cap = float(logit_softcap)
    _extend_kernel[(bsz, hq, triton.cdiv(max(max_ext, 1), block_m))](
        q, k_buffer, v_buffer, o_extend, lse, req_to_token, req_pool_indices, seq_lens, extend_seq_lens,
        extend_start_loc,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        o_extend.stride(0), o_extend.stride(1), req_to_token.stride(0),
        d, dv, hq // hkv, float(scale), cap if cap > 0 else 1.0,
        BLOCK_M=block_m, BLOCK_N=32, BLOCK_D=max(16, next_pow2(d)), BLOCK_DV=max(16, next_pow2(dv)),
        HAS_CAP=cap > 0, FP32=fp32,
    )
    return lse if return_lse else None
