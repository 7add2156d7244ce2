"""Triton capture passes over the paged K cache.

Both kernels run one program per (row, key chunk), where chunk c of a row is the
absolute chunk ``row_lo // CHUNK + c``; only chunks a row actually covers are launched,
so a windowed row over a long context costs its window, not its context. Each program
walks its chunk in tiles of BLOCK_N keys and writes a handful of floats, so the
workspace is O(rows x heads x chunks); the host folds the chunks together.

Top-k within a chunk uses a bitonic merge: with the running best (sorted descending)
and a tile (sorted ascending), ``max(best[i], tile[i])`` holds the BLOCK_N largest of
their union, which one more sort puts back in order. Candidates are packed int64 keys
(see capture_common), so the comparison carries the position along.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from sgl_kernel._triton_util import next_pow2
from sgl_kernel.capture_common import Rows
from sgl_kernel.zones import N_HIST_BINS

# Keys per tile (and the smallest chunk); the top-k buffer is max(this, next_pow2(k)) wide.
DEFAULT_BLOCK_N = 64


@triton.jit
def _scores(Q, K, q_off, slots, g, stride_kh, mask_n, offs_d, D, scale, softcap, HAS_CAP: tl.constexpr):
    """Scaled (and soft-capped) float32 scores of one query head against a tile of keys."""
    mask_d = offs_d < D
    q = tl.load(Q + q_off + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    k = tl.load(K + slots[:, None] + g * stride_kh + offs_d[None, :],
                mask=mask_n[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    s = tl.sum(k * q[None, :], axis=1) * scale
    if HAS_CAP:
        # tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at +-inf, no tanh intrinsic needed
        s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0))
    return s


@triton.jit
def _lse_kernel(
    Q, K, ReqToToken, RowReq, RowPos, RowLo, HeadIds, KvIds, Out,
    stride_qn, stride_qh, stride_ks, stride_kh, stride_rt,
    n_chunks, D, scale, softcap,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_CAP: tl.constexpr,
):
    n = tl.program_id(0)
    c = tl.program_id(1)
    hi = tl.program_id(2)
    n_heads = tl.num_programs(2)
    t = tl.load(RowPos + n)
    lo = tl.load(RowLo + n)
    r = tl.load(RowReq + n)
    c_abs = lo // CHUNK + c
    start = tl.maximum(c_abs * CHUNK, lo)
    end = tl.minimum(c_abs * CHUNK + CHUNK, t + 1)
    h = tl.load(HeadIds + hi)
    g = tl.load(KvIds + hi)
    offs_d = tl.arange(0, BLOCK_D)
    m = -float("inf")
    l = 0.0
    for j0 in range(start, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        mask_n = offs < end
        slots = tl.load(ReqToToken + r * stride_rt + offs, mask=mask_n, other=0).to(tl.int64) * stride_ks
        s = _scores(Q, K, n * stride_qn + h * stride_qh, slots, g, stride_kh, mask_n, offs_d, D,
                    scale, softcap, HAS_CAP)
        s = tl.where(mask_n, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: every tile has >= 1 key
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new), axis=0)
        m = m_new
    base = ((n * n_heads + hi) * n_chunks + c) * 2
    tl.store(Out + base, m)
    tl.store(Out + base + 1, l)


@triton.jit
def _stats_kernel(
    Q, K, ReqToToken, RowReq, RowPos, RowLo, MaskPre, HeadIds, KvIds, Lse,
    OutHist, OutMisc, OutEnt, OutKeys,
    stride_qn, stride_qh, stride_ks, stride_kh, stride_rt,
    n_heads, n_chunks, top_k, D, scale, softcap,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, NBINS: tl.constexpr,
    BLOCK_H: tl.constexpr, HAS_CAP: tl.constexpr, DO_TOPK: tl.constexpr,
):
    n = tl.program_id(0)
    c = tl.program_id(1)
    t = tl.load(RowPos + n)
    lo = tl.load(RowLo + n)
    r = tl.load(RowReq + n)
    mp = tl.load(MaskPre + n)
    c_abs = lo // CHUNK + c
    start = tl.maximum(c_abs * CHUNK, lo)
    end = tl.minimum(c_abs * CHUNK + CHUNK, t + 1)
    offs_d = tl.arange(0, BLOCK_D)
    bin_ids = tl.arange(0, NBINS)
    hist = tl.zeros([NBINS], dtype=tl.float32)
    masked = 0.0
    head_ids = tl.arange(0, BLOCK_H)
    ent = tl.zeros([BLOCK_H], dtype=tl.float32)  # per selected head
    best = tl.full([BLOCK_N], -1, tl.int64)
    for j0 in range(start, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        mask_n = offs < end
        slots = tl.load(ReqToToken + r * stride_rt + offs, mask=mask_n, other=0).to(tl.int64) * stride_ks
        p = tl.zeros([BLOCK_N], dtype=tl.float32)
        for hi in range(n_heads):
            h = tl.load(HeadIds + hi)
            g = tl.load(KvIds + hi)
            lse = tl.load(Lse + n * n_heads + hi)
            s = _scores(Q, K, n * stride_qn + h * stride_qh, slots, g, stride_kh, mask_n, offs_d, D,
                        scale, softcap, HAS_CAP)
            ph = tl.where(mask_n, tl.exp(s - lse), 0.0)
            ent += tl.where(head_ids == hi, tl.sum(ph * (lse - s), axis=0), 0.0)  # -p log p, every term >= 0
            p += ph
        p = p / n_heads
        d = t - offs
        b = tl.zeros([BLOCK_N], dtype=tl.int32)
        for e in tl.static_range(1, NBINS):
            b += (d >= (1 << e)).to(tl.int32)
        is_masked = offs < mp
        pu = tl.where(is_masked, 0.0, p)
        hist += tl.sum(tl.where(b[:, None] == bin_ids[None, :], pu[:, None], 0.0), axis=0)
        masked += tl.sum(tl.where(is_masked & mask_n, p, 0.0), axis=0)
        if DO_TOPK:
            bits = p.to(tl.int32, bitcast=True).to(tl.int64)
            key = tl.where(mask_n & (offs >= mp), (bits << 32) | offs.to(tl.int64), -1)
            best = tl.sort(tl.maximum(best, tl.sort(key, descending=False)), descending=True)
    nc = n * n_chunks + c
    tl.store(OutHist + nc * NBINS + bin_ids, hist)
    tl.store(OutMisc + nc, masked)
    tl.store(OutEnt + nc * n_heads + head_ids, ent, mask=head_ids < n_heads)
    if DO_TOPK:
        slot = tl.arange(0, BLOCK_N)
        tl.store(OutKeys + nc * top_k + slot, best, mask=slot < top_k)


def _geometry(rows: Rows, block_n: int) -> tuple[int, int, int]:
    """(BLOCK_N, CHUNK, number of chunk programs per row)."""
    bn = max(block_n, next_pow2(max(rows.top_k, 1)))
    chunk = -(-rows.chunk_size // bn) * bn  # a whole number of tiles
    if rows.n == 0:
        return bn, chunk, 0
    if rows.host is not None:  # known on the host: no sync
        return bn, chunk, max(t // chunk - lo // chunk + 1 for t, lo in zip(*rows.host))
    per_row = rows.row_pos // chunk - rows.row_lo // chunk + 1
    return bn, chunk, int(per_row.max())


def _common(rows: Rows) -> tuple:
    q, kb, rt = rows.q, rows.k_buffer, rows.req_to_token
    if q.stride(2) != 1 or kb.stride(2) != 1 or rt.stride(1) != 1:
        raise ValueError("q, k_buffer and req_to_token must be contiguous in their last dimension")
    return (q.stride(0), q.stride(1), kb.stride(0), kb.stride(1), rt.stride(0))


def lse_pass(rows: Rows, block_n: Optional[int] = None) -> torch.Tensor:
    dev = rows.q.device
    bn, chunk, n_chunks = _geometry(rows, block_n or DEFAULT_BLOCK_N)
    if rows.n == 0:
        return torch.empty(0, rows.n_heads, dtype=torch.float32, device=dev)
    ws = torch.empty(rows.n, rows.n_heads, n_chunks, 2, dtype=torch.float32, device=dev)
    _lse_kernel[(rows.n, n_chunks, rows.n_heads)](
        rows.q, rows.k_buffer, rows.req_to_token, rows.row_req, rows.row_pos, rows.row_lo,
        rows.head_ids, rows.kv_ids, ws, *_common(rows),
        n_chunks, rows.q.shape[2], rows.scale, rows.softcap if rows.softcap > 0 else 1.0,
        CHUNK=chunk, BLOCK_N=bn, BLOCK_D=next_pow2(rows.q.shape[2]), HAS_CAP=rows.softcap > 0,
    )
    m, l = ws[..., 0], ws[..., 1]
    big = m.amax(dim=2, keepdim=True)  # finite: chunk 0 of every row holds its first key
    return (big.squeeze(2) + torch.log((l * torch.exp(m - big)).sum(dim=2))).contiguous()


def stats_pass(rows: Rows, head_lse: torch.Tensor, block_n: Optional[int] = None) -> tuple[torch.Tensor, ...]:
    dev = rows.q.device
    bn, chunk, n_chunks = _geometry(rows, block_n or DEFAULT_BLOCK_N)
    k = rows.top_k
    if rows.n == 0:
        z = torch.zeros(0, dtype=torch.float32, device=dev)
        return (torch.zeros(0, N_HIST_BINS, device=dev), z, torch.zeros(0, rows.n_heads, device=dev),
                torch.full((0, k), -1, dtype=torch.int64, device=dev))
    hist = torch.empty(rows.n, n_chunks, N_HIST_BINS, dtype=torch.float32, device=dev)
    misc = torch.empty(rows.n, n_chunks, dtype=torch.float32, device=dev)  # masked mass
    ent = torch.empty(rows.n, n_chunks, rows.n_heads, dtype=torch.float32, device=dev)
    keys = torch.empty(rows.n, n_chunks, max(k, 1), dtype=torch.int64, device=dev)
    _stats_kernel[(rows.n, n_chunks)](
        rows.q, rows.k_buffer, rows.req_to_token, rows.row_req, rows.row_pos, rows.row_lo,
        rows.mask_prefix, rows.head_ids, rows.kv_ids, head_lse.contiguous(), hist, misc, ent, keys,
        *_common(rows),
        rows.n_heads, n_chunks, k, rows.q.shape[2], rows.scale, rows.softcap if rows.softcap > 0 else 1.0,
        CHUNK=chunk, BLOCK_N=bn, BLOCK_D=next_pow2(rows.q.shape[2]), NBINS=N_HIST_BINS,
        BLOCK_H=next_pow2(rows.n_heads), HAS_CAP=rows.softcap > 0, DO_TOPK=k > 0,
    )
    if k:
        top = torch.topk(keys.reshape(rows.n, -1), k, dim=1).values
    else:
        top = torch.empty(rows.n, 0, dtype=torch.int64, device=dev)
    return hist.sum(dim=1), misc.sum(dim=1), ent.sum(dim=1), top
