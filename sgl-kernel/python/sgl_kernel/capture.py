"""Exact attention capture over the paged K cache: the public entry points.

``attention_capture`` takes arbitrary query rows (row -> request, logical position t);
``decode_capture`` and ``extend_capture`` build those rows from a decode or an extend
batch. All three return a :class:`CaptureResult` whose fields are exact over every key
in each row's window (see docs/architecture.md#capture-definitions):

* pass 1 (skipped when the attention kernel hands over ``head_lse``): each selected
  head's lse, streamed over key chunks;
* pass 2: each key's head-averaged probability, folded into the distance histogram, the
  entropy, the masked mass and a running top-k.

Both passes work chunk by chunk (``chunk_size`` keys), so the only memory that grows
with the context is the KV cache itself. Triton runs on CUDA tensors, the torch
reference elsewhere; ``impl`` forces one.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from sgl_kernel._triton_util import choose_impl
from sgl_kernel.capture_common import (
    STATS_DIM,
    CaptureResult,
    check_head_lse,
    finalize,
    fingerprint,
    prepare_rows,
)

__all__ = ["CaptureResult", "attention_capture", "decode_capture", "extend_capture",
           "fingerprints_from_stats"]


def _impl_module(impl: str):
    if impl == "triton":
        from sgl_kernel import capture_triton as mod
    else:
        from sgl_kernel import capture_torch as mod
    return mod


def attention_capture(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    req_to_token: torch.Tensor,
    row_req: torch.Tensor,
    row_pos: torch.Tensor,
    *,
    scale: float,
    top_k: int,
    window: Union[int, torch.Tensor] = 0,
    head_ids: Optional[torch.Tensor] = None,
    mask_prefix: Optional[torch.Tensor] = None,
    logit_softcap: float = 0.0,
    chunk_size: int = 2048,
    head_lse: Optional[torch.Tensor] = None,
    impl: str = "auto",
    host_rows: Optional[tuple[Sequence[int], Sequence[int]]] = None,
) -> CaptureResult:
    """Exact capture statistics for N query rows.

    q [N, Hq, D] (post-RoPE, any float dtype), k_buffer [slots, Hkv, D], req_to_token
    [R, max_ctx], row_req / row_pos [N]. Keys of row n are positions lo..t of request
    row_req[n], lo = max(0, t - window + 1) when window > 0 (int or [N]). Keys at
    positions < mask_prefix[n] stay in the softmax but never enter the top-k; their
    total probability is ``masked_mass``. ``head_lse`` ([N, Hq] from the attention
    kernel, or [N, H_sel]) skips the first pass; it is only valid over the full causal
    range with the same scale and softcap, so it is refused when a window cuts keys off.
    ``host_rows`` = (row_pos, window) on the host, from a caller that built the rows: no
    device-side checks and no device sync (see ``capture_common.prepare_rows``).
    """
    rows = prepare_rows(
        q, k_buffer, req_to_token, row_req, row_pos, scale=scale, top_k=top_k, window=window,
        head_ids=head_ids, mask_prefix=mask_prefix, logit_softcap=logit_softcap, chunk_size=chunk_size,
        host_rows=host_rows,
    )
    mod = _impl_module(choose_impl(impl, q))
    if head_lse is not None:
        if rows.n and (max(rows.host[1]) if rows.host is not None else int(rows.row_lo.max())) > 0:
            raise ValueError("head_lse covers all keys 0..t; it cannot be reused when window cuts keys off")
        lse = check_head_lse(head_lse, rows)
    else:
        # The torch implementation scores short windows once for both passes.
        fused = getattr(mod, "fused_passes", lambda _: None)(rows)
        if fused is not None:
            return finalize(rows, *fused)
        lse = mod.lse_pass(rows)
    hist, masked, entropy, keys = mod.stats_pass(rows, lse)
    return finalize(rows, lse, hist, masked, entropy, keys)


def decode_capture(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    scale: float,
    top_k: int,
    window: Union[int, torch.Tensor] = 0,
    head_ids: Optional[torch.Tensor] = None,
    mask_prefix: Optional[torch.Tensor] = None,
    logit_softcap: float = 0.0,
    chunk_size: int = 2048,
    head_lse: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> CaptureResult:
    """Capture for a decode batch: one row per request, the query at t = seq_len - 1.

    q [B, Hq, D]; req_pool_indices, seq_lens [B] (seq_lens count the current token, whose
    K is already in the cache). ``head_lse`` can be decode_attention_fwd(return_lse=True)'s.
    """
    if not isinstance(seq_lens, torch.Tensor) or seq_lens.dim() != 1:
        raise ValueError("seq_lens must be a 1-D tensor [B]")
    if seq_lens.numel() and int(seq_lens.min()) < 1:
        raise ValueError("seq_lens must be >= 1")
    res = attention_capture(
        q, k_buffer, req_to_token, req_pool_indices, seq_lens.to(torch.int64) - 1, scale=scale, top_k=top_k,
        window=window, head_ids=head_ids, mask_prefix=mask_prefix, logit_softcap=logit_softcap,
        chunk_size=chunk_size, head_lse=head_lse, impl=impl,
    )
    res.row_index = torch.arange(q.shape[0], device=q.device)
    return res


def fingerprints_from_stats(stats: torch.Tensor, n_keys: torch.Tensor) -> torch.Tensor:
    """Fingerprints [..., 20] from a decode attention kernel's head-averaged statistics
    ``stats`` [..., 18] (hist[16], masked mass, entropy; the layout of
    ``attention_triton.decode_attention_fwd(stats=...)`` averaged over heads) of rows whose
    windows hold ``n_keys`` keys (broadcast against stats' leading dims). The same
    formula as every other capture path (``capture_common.fingerprint``); any number of
    layers and rows in one call, so a decode step finalises all its fingerprints at once."""
    lead = stats.shape[:-1]
    flat = stats.reshape(-1, STATS_DIM).float()
    n = torch.broadcast_to(n_keys, lead).reshape(-1)
    return fingerprint(flat[:, :-2], flat[:, -1], n).reshape(*lead, -1)


def extend_rows(
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    extend_start_loc: torch.Tensor,
    stride: int = 1,
    include_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row_index into q_extend, request index b, logical position) of the captured rows.

    With stride s, a prompt position is captured when position % s == 0 (absolute, so a
    chunked prefill captures the same positions as an unchunked one); include_last adds
    each request's last extend position.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    for name, t in (("seq_lens", seq_lens), ("extend_seq_lens", extend_seq_lens),
                    ("extend_start_loc", extend_start_loc)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a 1-D integer tensor [B]")
    if not (seq_lens.shape == extend_seq_lens.shape == extend_start_loc.shape):
        raise ValueError("seq_lens, extend_seq_lens and extend_start_loc must have the same length")
    dev = seq_lens.device
    idx, req, pos = [], [], []
    for b, (sl, el, st) in enumerate(zip(seq_lens.tolist(), extend_seq_lens.tolist(), extend_start_loc.tolist())):
        if el < 0 or el > sl:
            raise ValueError(f"extend_seq_lens[{b}]={el} must be in [0, seq_lens[{b}]={sl}]")
        pre = sl - el
        first = -(-pre // stride) * stride  # first multiple of stride >= pre
        p = list(range(first, sl, stride))
        if include_last and el > 0 and (not p or p[-1] != sl - 1):
            p.append(sl - 1)
        idx += [st + x - pre for x in p]
        req += [b] * len(p)
        pos += p
    def mk(v: list[int]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.int64, device=dev)

    return mk(idx), mk(req), mk(pos)


def extend_capture(
    q_extend: torch.Tensor,
    k_buffer: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    extend_start_loc: torch.Tensor,
    *,
    scale: float,
    top_k: int,
    stride: int = 1,
    include_last: bool = False,
    window: Union[int, torch.Tensor] = 0,
    head_ids: Optional[torch.Tensor] = None,
    mask_prefix: Optional[Union[int, torch.Tensor]] = None,
    logit_softcap: float = 0.0,
    chunk_size: int = 2048,
    head_lse: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> CaptureResult:
    """Capture for the prompt positions of an extend batch (causal), optionally strided.

    q_extend [T, Hq, D] as given to extend attention; per-request tensors [B] as there
    (prefix length = seq_lens - extend_seq_lens). ``window`` and ``mask_prefix`` are an int
    or one value per request [B]. ``head_lse`` may be extend_attention_fwd's [T, Hq].
    The result's ``row_index`` says which row of q_extend each result row is, ``row_pos``
    its logical position.
    """
    idx, b, pos = extend_rows(seq_lens, extend_seq_lens, extend_start_loc, stride, include_last)
    if not isinstance(q_extend, torch.Tensor) or q_extend.dim() != 3:
        raise ValueError("q_extend must be a float tensor [T, Hq, D]")
    if idx.numel() and int(idx.max()) >= q_extend.shape[0]:
        raise ValueError("extend_start_loc + extend_seq_lens run past q_extend's rows")
    nb = seq_lens.shape[0]

    def per_req(x: Optional[Union[int, torch.Tensor]], name: str) -> Optional[Union[int, torch.Tensor]]:
        if x is None or isinstance(x, int):
            return x
        t = _per_request(x, name, nb)
        return t[b.to(t.device)]

    res = attention_capture(
        q_extend[idx.to(q_extend.device)], k_buffer, req_to_token,
        torch.as_tensor(req_pool_indices).to(b.device)[b], pos, scale=scale, top_k=top_k,
        window=per_req(window, "window"), head_ids=head_ids, mask_prefix=per_req(mask_prefix, "mask_prefix"),
        logit_softcap=logit_softcap, chunk_size=chunk_size,
        head_lse=None if head_lse is None else _rows_of(head_lse, idx, q_extend.shape[0]), impl=impl,
    )
    res.row_index = idx
    return res


def _per_request(x: torch.Tensor, name: str, nb: int) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() == 0:
        return t.reshape(1).expand(nb)
    if t.shape != (nb,):
        raise ValueError(f"{name} must be an int or have one value per request [{nb}], got {list(t.shape)}")
    return t


def _rows_of(head_lse: torch.Tensor, idx: torch.Tensor, n_rows: int) -> torch.Tensor:
    if not isinstance(head_lse, torch.Tensor) or head_lse.dim() != 2 or head_lse.shape[0] != n_rows:
        raise ValueError(f"head_lse must be a tensor [{n_rows}, heads] (one row per extend token)")
    return head_lse[idx.to(head_lse.device)]
