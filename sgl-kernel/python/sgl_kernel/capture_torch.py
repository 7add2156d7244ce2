"""Plain-torch capture passes (the reference; runs on any device).

Both passes stream over the keys keeping a running state per (row, head), so nothing
here grows with the context. Keys go in tiles of at most ``_TILE_KEYS`` (and never more
than ``chunk_size``): the tile's slots, the gathered K tile, its float32 copy and the scores
are the whole workspace, 0.6 MiB at 9 heads x 64 dims for a decode row at any context length
(``sgl_kernel.bench_capture`` counts the allocations exactly). Rows are sorted by request
and go in blocks that keep the score and K tiles bounded; a block of one request's rows (an extend
batch has many) shares one K tile, a block of several requests' rows (a decode batch)
gathers each row's keys, so the per-tile overhead is paid once per block, not per
request. When every window fits in one tile of at most ``_ONE_PASS_KEYS`` positions
(decode at chat lengths), ``fused_passes`` scores the keys once and derives the lse and
the statistics from the same tile. Math is float32, like the Triton kernels.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from sgl_kernel.capture_common import NO_KEY, Rows, pack_keys, softcap_
from sgl_kernel.zones import N_HIST_BINS

# Keys per tile, and an upper bound on floats in one score tile (rows x heads x keys).
_TILE_KEYS = 256
_TILE_ELEMS = 1 << 22
# A block whose keys all fit in this many positions is scored once: the lse and the
# statistics come from the same score tile, so K is gathered and multiplied once, not
# twice. The bound keeps that path's workspace a constant (rows x heads x 1024 floats).
_ONE_PASS_KEYS = 1024


def distance_bin(d: torch.Tensor) -> torch.Tensor:
    """Histogram bin of integer distances d >= 0: 0 for {0,1}, floor(log2 d) capped at 15.

    frexp gives d = m * 2^e with m in [0.5, 1), so floor(log2 d) = e - 1 exactly (float64
    holds every int64 distance below 2^53; larger ones land in the last bin anyway)."""
    _, e = torch.frexp(d.to(torch.float64))
    return (e.to(d.dtype) - 1).clamp_(0, N_HIST_BINS - 1)


def _tile(rows: Rows) -> int:
    return min(rows.chunk_size, _TILE_KEYS)


def _one_pass_tile(rows: Rows) -> int | None:
    """The tile that holds every row's whole window when that is at most _ONE_PASS_KEYS
    positions and at most chunk_size (the caller's workspace bound), else None."""
    if rows.n == 0:
        return None
    span = int(rows.row_pos.max()) - int(rows.row_lo.min()) // _tile(rows) * _tile(rows) + 1
    return span if span <= min(_ONE_PASS_KEYS, rows.chunk_size) else None


def _blocks(rows: Rows, tile: int) -> Iterator[torch.Tensor]:
    """Row indices in blocks that keep the score tile [rows, heads, keys] and the gathered
    K tile [rows, keys, kv heads, dim] bounded. Rows of different requests share a block
    (each gathers its own keys), so a decode batch costs one pass per key tile, not one
    per request."""
    per_row = tile * max(rows.n_heads, rows.k_buffer.shape[1] * rows.k_buffer.shape[2])
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
    q = rows.q.index_select(0, idx)
    if rows.head_ids.numel() != q.shape[1] or sel is not None:
        q = q.index_select(1, rows.head_ids)
    qsel = q.float()  # [n, H, D]
    if sel is None:  # heads already sorted into full groups: a view, no scatter
        return uniq, qsel.view(idx.numel(), uniq.numel(), g, qsel.shape[2]), None
    qg = torch.zeros(idx.numel(), uniq.numel(), g, qsel.shape[2], dtype=torch.float32, device=qsel.device)
    qg[:, inverse, rank] = qsel
    return uniq, qg, sel


def _gather_keys(k_buffer: torch.Tensor, slots: torch.Tensor, uniq: torch.Tensor) -> torch.Tensor:
    """Keys of the used KV heads, head-major: [m, U, c, D] contiguous, so the scores are
    one batched (q @ k^T) GEMM per (row, KV head)."""
    m, c = slots.shape
    if k_buffer.is_contiguous():  # the pool's layout: one gathered row per (slot, head)
        rows = (slots.unsqueeze(1) * k_buffer.shape[1] + uniq.view(1, -1, 1)).reshape(-1)
        return k_buffer.view(-1, k_buffer.shape[2]).index_select(0, rows).view(m, uniq.numel(), c, -1)
    k = k_buffer.index_select(0, slots.reshape(-1)).view(m, c, *k_buffer.shape[1:])
    return k.index_select(2, uniq).transpose(1, 2).contiguous()


def _chunks(rows: Rows, idx: torch.Tensor, layout: tuple,
            c_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(positions [c], scores [n, H, c], in-window mask [n, c]) for each key tile of a row block.

    Whatever c_size, K is gathered (with its slots) in pieces of at most _tile(rows) keys and
    freed before the tile is yielded, so besides the scores the block holds one piece of K:
    nothing here grows with the context or with c_size (the one-pass tile of _ONE_PASS_KEYS)."""
    lo = rows.row_lo[idx]
    t = rows.row_pos[idx]
    piece = _tile(rows)
    first = int(lo.min()) // piece * piece
    end = int(t.max()) + 1
    uniq, qg, sel = _grouped_queries(rows, idx, layout)
    n, n_u, g, d = qg.shape
    reqs = rows.row_req[idx]
    one_req = bool((reqs == reqs[0]).all())
    reqs = reqs[:1] if one_req else reqs
    if one_req:  # all rows share the keys: one GEMM per KV head with the rows stacked
        q_stacked = qg.permute(1, 0, 2, 3).reshape(n_u, n * g, d)

    def scores(p0: int, p1: int) -> torch.Tensor:  # [n, U, G, p1 - p0]
        # Only this piece of the table rows: a slice over the block's whole span would be a
        # copy of 4 bytes per key of context (4 MiB at 1M keys).
        slots = rows.req_to_token[:, p0:p1].index_select(0, reqs).long()  # past t: masked below
        k = _gather_keys(rows.k_buffer, slots, uniq).float()  # [1 or n, U, c, D]
        if one_req:
            return torch.matmul(q_stacked, k[0].transpose(1, 2)).view(n_u, n, g, -1).transpose(0, 1)
        return torch.matmul(qg, k.transpose(2, 3))

    for c0 in range(first, end, c_size):
        c1 = min(c0 + c_size, end)
        pos = torch.arange(c0, c1, device=qg.device)
        parts = [scores(p0, min(p0 + piece, c1)) for p0 in range(c0, c1, piece)]
        s = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)).flatten(1, 2)
        del parts
        if sel is not None:
            s = s[:, sel]
        s = softcap_(s * rows.scale, rows.softcap)
        inside = (pos[None, :] >= lo[:, None]) & (pos[None, :] <= t[:, None])
        yield pos, s, inside


def _block_lse(tiles: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n: int, h: int,
               device: torch.device) -> torch.Tensor:
    """lse [n, H] over a block's key tiles, with a running max per (row, head)."""
    m = torch.full((n, h), -torch.inf, device=device)
    l = torch.zeros_like(m)
    for _, s, inside in tiles:
        s = s.masked_fill(~inside[:, None, :], -torch.inf)
        m_new = torch.maximum(m, s.amax(dim=2))
        # A row with no key in this chunk yet keeps m = -inf: avoid exp(-inf - -inf).
        safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        l = l * torch.exp(m - safe) + torch.exp(s - safe[:, :, None]).sum(dim=2)
        m = m_new
    return m + torch.log(l)


def _block_stats(rows: Rows, idx: torch.Tensor, lse: torch.Tensor,
                 tiles: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """hist [n,16], masked [n], entropy [n, H], top-k keys [n,k] of a block with known lse [n, H]."""
    dev, h, k, n = rows.q.device, rows.n_heads, rows.top_k, idx.numel()
    lse = lse[:, :, None]
    t = rows.row_pos[idx]
    mp = rows.mask_prefix[idx]
    hist = torch.zeros(n, N_HIST_BINS, dtype=torch.float32, device=dev)
    masked = torch.zeros(n, dtype=torch.float32, device=dev)
    ent = torch.zeros(n, h, dtype=torch.float32, device=dev)
    keys = torch.full((n, k), NO_KEY, dtype=torch.int64, device=dev)
    for pos, s, inside in tiles:
        ph = torch.where(inside[:, None, :], torch.exp(s - lse), torch.zeros_like(s))
        # -sum p log p = sum p (lse - s); every term >= 0, so no cancellation.
        ent += (ph * (lse - s)).sum(dim=2)
        p = ph.sum(dim=1) / h  # [n, c] head-averaged probability
        is_masked = pos[None, :] < mp[:, None]
        masked += torch.where(is_masked, p, torch.zeros_like(p)).sum(dim=1)
        bins = distance_bin(t[:, None] - pos[None, :]).clamp(min=0)
        hist.scatter_add_(1, bins, torch.where(is_masked, torch.zeros_like(p), p))
        if k:
            ck = pack_keys(p, pos.expand_as(p), inside & ~is_masked)
            keys = torch.topk(torch.cat([keys, ck], dim=1), k, dim=1).values
    return hist, masked, ent, keys


def lse_pass(rows: Rows) -> torch.Tensor:
    """Each selected head's lse over its row's window, with a running max per (row, head)."""
    out = torch.empty(rows.n, rows.n_heads, dtype=torch.float32, device=rows.q.device)
    layout = _head_layout(rows)
    for idx in _blocks(rows, _tile(rows)):
        out[idx] = _block_lse(_chunks(rows, idx, layout, _tile(rows)), idx.numel(), rows.n_heads, rows.q.device)
    return out


def _new_stats(rows: Rows) -> tuple[torch.Tensor, ...]:
    dev = rows.q.device
    return (torch.zeros(rows.n, N_HIST_BINS, dtype=torch.float32, device=dev),
            torch.zeros(rows.n, dtype=torch.float32, device=dev),
            torch.zeros(rows.n, rows.n_heads, dtype=torch.float32, device=dev),
            torch.full((rows.n, rows.top_k), NO_KEY, dtype=torch.int64, device=dev))


def stats_pass(rows: Rows, head_lse: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """hist [N,16], masked [N], entropy [N, H_sel], top-k keys [N,k] from known per-head lse."""
    out = _new_stats(rows)
    layout = _head_layout(rows)
    tile = _one_pass_tile(rows) or _tile(rows)
    for idx in _blocks(rows, tile):
        block = _block_stats(rows, idx, head_lse[idx], _chunks(rows, idx, layout, tile))
        for o, b in zip(out, block):
            o[idx] = b
    return out


def fused_passes(rows: Rows) -> tuple[torch.Tensor, ...] | None:
    """(head_lse, hist, masked, entropy, keys) from one scoring of the keys, when every
    row's window fits in one tile of at most _ONE_PASS_KEYS positions; None otherwise
    (the caller then runs lse_pass and stats_pass)."""
    tile = _one_pass_tile(rows)
    if tile is None:
        return None
    lse = torch.empty(rows.n, rows.n_heads, dtype=torch.float32, device=rows.q.device)
    out = _new_stats(rows)
    layout = _head_layout(rows)
    for idx in _blocks(rows, tile):
        tiles = list(_chunks(rows, idx, layout, tile))
        lse[idx] = _block_lse(tiles, idx.numel(), rows.n_heads, rows.q.device)
        for o, b in zip(out, _block_stats(rows, idx, lse[idx], tiles)):
            o[idx] = b
    return (lse, *out)
