"""Plain-torch capture passes (the reference; runs on any device).

Both passes stream over the keys keeping a running state per (row, head), so nothing
here grows with the context. Keys go in tiles of at most ``_TILE_KEYS`` (and never more
than ``chunk_size``): the gathered K tile, its float32 copy and the scores are the whole
workspace, a couple of MiB at 9 heads x 64 dims. Rows are sorted by request and go in
blocks that keep the score and K tiles bounded; a block of one request's rows (an extend
batch has many) shares one K tile, a block of several requests' rows (a decode batch)
gathers each row's keys, so the per-tile overhead is paid once per block, not per request. Math is float32, like the
Triton kernels.
"""
from __future__ import annotations

from typing import Iterator

import torch

from sgl_kernel.capture_common import NO_KEY, Rows, pack_keys, softcap_
from sgl_kernel.zones import N_HIST_BINS

# Keys per tile, and an upper bound on floats in one score tile (rows x heads x keys).
_TILE_KEYS = 256
_TILE_ELEMS = 1 << 22
_BIN_EDGES = [1 << b for b in range(1, N_HIST_BINS)]  # d >= 2^b adds one to the bin


def distance_bin(d: torch.Tensor) -> torch.Tensor:
    """Histogram bin of distances d >= 0: 0 for {0,1}, floor(log2 d) up to 15."""
    b = torch.zeros_like(d)
    for edge in _BIN_EDGES:
        b += (d >= edge).to(d.dtype)
    return b


def _tile(rows: Rows) -> int:
    return min(rows.chunk_size, _TILE_KEYS)


def _blocks(rows: Rows) -> Iterator[torch.Tensor]:
    """Row indices in blocks that keep the score tile [rows, heads, keys] and the gathered
    K tile [rows, keys, kv heads, dim] bounded. Rows of different requests share a block
    (each gathers its own keys), so a decode batch costs one pass per key tile, not one
    per request."""
    per_row = _tile(rows) * max(rows.n_heads, rows.k_buffer.shape[1] * rows.k_buffer.shape[2])
    per_block = max(1, _TILE_ELEMS // per_row)
    order = torch.argsort(rows.row_req, stable=True)
    for b in range(0, rows.n, per_block):
        yield order[b : b + per_block]


def _head_layout(rows: Rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """How selected heads sit in their KV groups (depends only on the head subset):
    (kv heads used [U], group of each head, rank of each head in its group, largest group
    size G, index of each selected head in the flattened U*G scores or None for identity)."""
    uniq, inverse = torch.unique(rows.kv_ids, sorted=True, return_inverse=True)
    n_u = uniq.numel()
    rank = torch.zeros_like(inverse)
    for u in range(n_u):  # position of each selected head inside its KV group
        members = (inverse == u).nonzero().flatten()
        rank[members] = torch.arange(members.numel(), device=rank.device)
    g = int(rank.max()) + 1
    flat = inverse * g + rank
    identity = flat.numel() == n_u * g and bool((flat == torch.arange(flat.numel(), device=flat.device)).all())
    return uniq, inverse, rank, g, None if identity else flat


def _grouped_queries(rows: Rows, idx: torch.Tensor, layout: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Queries laid out per KV head so one batched matmul scores a tile of keys.

    Returns (kv heads used [U], queries [n, U, G, D] zero-padded to the largest group G,
    index of each selected head in the flattened U*G scores, or None when it is the identity).
    """
    uniq, inverse, rank, g, sel = layout
    qsel = rows.q[idx][:, rows.head_ids].float()  # [n, H, D]
    qg = torch.zeros(idx.numel(), uniq.numel(), g, qsel.shape[2], dtype=torch.float32, device=qsel.device)
    qg[:, inverse, rank] = qsel
    return uniq, qg, sel


def _chunks(rows: Rows, idx: torch.Tensor, layout: tuple) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(positions [c], scores [n, H, c], in-window mask [n, c]) for each key tile of a row block."""
    c_size = _tile(rows)
    lo = rows.row_lo[idx]
    t = rows.row_pos[idx]
    first = int(lo.min()) // c_size * c_size
    end = int(t.max()) + 1
    uniq, qg, sel = _grouped_queries(rows, idx, layout)
    all_kv = uniq.numel() == rows.k_buffer.shape[1]
    reqs = rows.row_req[idx]
    one_req = bool((reqs == reqs[0]).all())
    tables = rows.req_to_token[reqs[:1] if one_req else reqs]  # [1 or n, max_ctx]
    for c0 in range(first, end, c_size):
        c1 = min(c0 + c_size, end)
        pos = torch.arange(c0, c1, device=qg.device)
        slots = tables[:, c0:c1].long()  # positions past a row's t are masked below
        k = rows.k_buffer.index_select(0, slots.reshape(-1)).view(*slots.shape, *rows.k_buffer.shape[1:])
        if not all_kv:
            k = k.index_select(2, uniq)
        s = torch.einsum("nugd,mcud->nugc" if one_req else "nugd,ncud->nugc", qg, k.float()).flatten(1, 2)
        if sel is not None:
            s = s[:, sel]
        s = softcap_(s * rows.scale, rows.softcap)
        inside = (pos[None, :] >= lo[:, None]) & (pos[None, :] <= t[:, None])
        yield pos, s, inside


def lse_pass(rows: Rows) -> torch.Tensor:
    """Each selected head's lse over its row's window, with a running max per (row, head)."""
    out = torch.empty(rows.n, rows.n_heads, dtype=torch.float32, device=rows.q.device)
    layout = _head_layout(rows)
    for idx in _blocks(rows):
        m = torch.full((idx.numel(), rows.n_heads), -torch.inf, device=rows.q.device)
        l = torch.zeros_like(m)
        for _, s, inside in _chunks(rows, idx, layout):
            s = s.masked_fill(~inside[:, None, :], -torch.inf)
            m_new = torch.maximum(m, s.amax(dim=2))
            # A row with no key in this chunk yet keeps m = -inf: avoid exp(-inf - -inf).
            safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            l = l * torch.exp(m - safe) + torch.exp(s - safe[:, :, None]).sum(dim=2)
            m = m_new
        out[idx] = m + torch.log(l)
    return out


def stats_pass(rows: Rows, head_lse: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """hist [N,16], masked [N], entropy [N], top-k keys [N,k] from known per-head lse."""
    dev = rows.q.device
    n, h, k = rows.n, rows.n_heads, rows.top_k
    hist = torch.zeros(n, N_HIST_BINS, dtype=torch.float32, device=dev)
    masked = torch.zeros(n, dtype=torch.float32, device=dev)
    entropy = torch.zeros(n, dtype=torch.float32, device=dev)
    keys = torch.full((n, k), NO_KEY, dtype=torch.int64, device=dev)
    layout = _head_layout(rows)
    for idx in _blocks(rows):
        lse = head_lse[idx][:, :, None]  # [n, H, 1]
        t = rows.row_pos[idx]
        mp = rows.mask_prefix[idx]
        b_hist = torch.zeros(idx.numel(), N_HIST_BINS, dtype=torch.float32, device=dev)
        b_masked = torch.zeros(idx.numel(), dtype=torch.float32, device=dev)
        b_ent = torch.zeros(idx.numel(), dtype=torch.float32, device=dev)
        b_keys = torch.full((idx.numel(), k), NO_KEY, dtype=torch.int64, device=dev)
        for pos, s, inside in _chunks(rows, idx, layout):
            ph = torch.where(inside[:, None, :], torch.exp(s - lse), torch.zeros_like(s))
            # -sum p log p = sum p (lse - s); every term >= 0, so no cancellation.
            b_ent += (ph * (lse - s)).sum(dim=(1, 2)) / h
            p = ph.sum(dim=1) / h  # [n, c] head-averaged probability
            is_masked = pos[None, :] < mp[:, None]
            b_masked += torch.where(is_masked, p, torch.zeros_like(p)).sum(dim=1)
            bins = distance_bin(t[:, None] - pos[None, :]).clamp(min=0)
            b_hist.scatter_add_(1, bins, torch.where(is_masked, torch.zeros_like(p), p))
            if k:
                ck = pack_keys(p, pos.expand_as(p), inside & ~is_masked)
                b_keys = torch.topk(torch.cat([b_keys, ck], dim=1), k, dim=1).values
        hist[idx], masked[idx], entropy[idx], keys[idx] = b_hist, b_masked, b_ent, b_keys
    return hist, masked, entropy, keys
