"""What both capture implementations share: inputs checked and normalised into one row
description, the result type, and the post-processing that turns the two passes' small
outputs into a :class:`CaptureResult`.

The two implementations (``capture_torch``, ``capture_triton``) each provide two passes:

* ``lse_pass(rows) -> head_lse [N, H_sel]``: each selected head's log-sum-exp over the
  row's window, streamed over key chunks with a running max.
* ``stats_pass(rows, head_lse) -> (hist [N,16], masked [N], entropy [N, H_sel], keys [N,k])``:
  with the lse known, each key's exact probability is local, so one more pass over the
  chunks yields the histogram, the entropy, the masked mass and the top-k.

Top-k candidates travel as packed int64 keys ``(float32 bits of p) << 32 | position``:
p >= 0, so its bit pattern orders like the value, and the position breaks ties the same
way in both implementations (larger position first). -1 marks "no key".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from sgl_kernel.zones import FINGERPRINT_DIM, LOCAL_BINS, LONG_BINS, MID_BINS, N_HIST_BINS

if TYPE_CHECKING:
    from sgl_kernel.sinks import SinkTerms

NO_KEY = -1
POS_MASK = 0xFFFFFFFF
# A decode kernel's capture statistics per row (and head): hist[0:16], masked mass at 16,
# entropy at 17 (attention_triton's stats, attention_cpu's, fingerprints_from_stats).
STATS_DIM = N_HIST_BINS + 2
# Version 2: a head whose non-sink mass is below this has no defined non-sink entropy (0),
# and a row whose unmasked non-sink mass is below it gets an all-zero histogram.
MIN_REST_MASS = 1e-4


@dataclass
class CaptureResult:
    """Exact attention statistics of N query rows (math: docs/architecture.md#capture-definitions)."""

    topk_pos: torch.Tensor  # [N, k] int64 logical positions, largest p first; -1 = padding
    topk_prob: torch.Tensor  # [N, k] float32 head-averaged p(j); 0 for padding
    topk_logit: torch.Tensor  # [N, k] float32, exp(topk_logit - lse_ref) == topk_prob; -inf for padding
    lse_ref: torch.Tensor  # [N] float32: the head's lse (one head) or the mean of the heads' lse
    head_lse: torch.Tensor  # [N, H_sel] float32
    hist: torch.Tensor  # [N, 16] float32 mass per distance bin over the unmasked keys
    entropy: torch.Tensor  # [N] float32 mean over heads of the entropy of p_h (nats)
    mass_captured: torch.Tensor  # [N] float32 sum of topk_prob
    masked_mass: torch.Tensor  # [N] float32 total p of masked keys
    n_keys: torch.Tensor  # [N] int64 |W|
    row_pos: Optional[torch.Tensor] = None  # [N] int64 logical query position of each row
    row_index: Optional[torch.Tensor] = None  # [N] int64 row of q each result row came from
    head_entropy: Optional[torch.Tensor] = None  # [N, H_sel] float32 entropy of each head's p_h (nats)

    @property
    def fingerprint(self) -> torch.Tensor:
        """[N, 20] float32 version-1 fingerprint (sgl_kernel.zones layout), computed from
        hist, entropy and n_keys when read: raw and sketch capture never pay its ~20 small ops."""
        return fingerprint(self.hist, self.entropy, self.n_keys)

    def fingerprint_v2(self, sink: "SinkTerms") -> torch.Tensor:
        """[N, 20] float32 version-2 (sink-aware) fingerprint, given the rows' sink terms."""
        assert self.head_entropy is not None  # finalize sets it
        return fingerprint_v2(self.hist, self.head_entropy, self.n_keys, sink)

    def to(self, device: Union[str, torch.device]) -> "CaptureResult":
        """Move every tensor (e.g. to "cpu" before serialising)."""
        kw = {f: (v.to(device) if isinstance(v, torch.Tensor) else v) for f, v in self.__dict__.items()}
        return CaptureResult(**kw)


@dataclass
class Rows:
    """Validated, normalised inputs of one capture call (all on q's device)."""

    q: torch.Tensor  # [N, Hq, D] as given (any float dtype)
    k_buffer: torch.Tensor  # [S, Hkv, D]
    req_to_token: torch.Tensor  # [R, max_ctx]
    row_req: torch.Tensor  # [N] int64
    row_pos: torch.Tensor  # [N] int64 t
    row_lo: torch.Tensor  # [N] int64 first position in the window
    mask_prefix: torch.Tensor  # [N] int64 (0 = nothing masked)
    head_ids: torch.Tensor  # [H_sel] int64 query heads
    kv_ids: torch.Tensor  # [H_sel] int64 KV head of each selected head
    scale: float
    softcap: float
    top_k: int
    chunk_size: int
    # (row_pos, row_lo) on the host when the caller passed host_rows: geometry without a sync
    host: Optional[tuple[list[int], list[int]]] = None

    @property
    def n(self) -> int:
        return int(self.row_pos.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.head_ids.shape[0])


def _as_index(x: object, name: str, n: int, device: torch.device) -> torch.Tensor:
    """An int or a length-n integer tensor/sequence as int64[n]."""
    if isinstance(x, bool):
        raise ValueError(f"{name} must be an integer or an integer tensor, got bool")
    if isinstance(x, int):
        return torch.full((n,), x, dtype=torch.int64, device=device)
    t = torch.as_tensor(x, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold integers, got {t.dtype}")
    if t.dim() == 0:
        return t.to(torch.int64).expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}], got {list(t.shape)}")
    return t.to(torch.int64)


def prepare_rows(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    req_to_token: torch.Tensor,
    row_req: torch.Tensor,
    row_pos: torch.Tensor,
    *,
    scale: float,
    top_k: int,
    window: Union[int, torch.Tensor],
    head_ids: Optional[torch.Tensor],
    mask_prefix: Optional[torch.Tensor],
    logit_softcap: float,
    chunk_size: int,
    host_rows: Optional[tuple[Sequence[int], Sequence[int]]] = None,
) -> Rows:
    """Check every argument and raise ValueError naming the first bad one.

    ``host_rows`` = (row_pos, window) as host integers, from a caller that built the row
    tensors itself (the scheduler): the device-side range checks of the row and head
    tensors are skipped and the geometry is read from these, so the call never waits for
    the device and its kernels queue behind whatever is running (a CUDA graph replay).
    Their shapes and host-side arguments are still checked."""
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or not q.dtype.is_floating_point:
        raise ValueError("q must be a float tensor [N, Hq, D]")
    n, hq, d = q.shape
    dev = q.device
    if not isinstance(k_buffer, torch.Tensor) or k_buffer.dim() != 3 or not k_buffer.dtype.is_floating_point:
        raise ValueError("k_buffer must be a float tensor [num_slots, Hkv, D]")
    if k_buffer.shape[2] != d:
        raise ValueError(f"k_buffer head dim {k_buffer.shape[2]} != q head dim {d}")
    hkv = k_buffer.shape[1]
    if hkv < 1 or hq % hkv != 0:
        raise ValueError(f"q heads ({hq}) must be a multiple of k_buffer heads ({hkv})")
    if k_buffer.device != dev:
        raise ValueError(f"k_buffer is on {k_buffer.device}, q on {dev}")
    if not isinstance(req_to_token, torch.Tensor) or req_to_token.dim() != 2 or req_to_token.dtype.is_floating_point:
        raise ValueError("req_to_token must be an integer tensor [R, max_ctx]")
    if req_to_token.device != dev:
        raise ValueError(f"req_to_token is on {req_to_token.device}, q on {dev}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    try:
        scale = float(scale)
        logit_softcap = float(logit_softcap)
    except (TypeError, ValueError):
        raise ValueError("scale and logit_softcap must be numbers") from None
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    if not math.isfinite(logit_softcap) or logit_softcap < 0:
        raise ValueError(f"logit_softcap must be >= 0, got {logit_softcap}")

    rr = _as_index(row_req, "row_req", n, dev)
    rp = _as_index(row_pos, "row_pos", n, dev)
    win = _as_index(window, "window", n, dev)
    mp = _as_index(0 if mask_prefix is None else mask_prefix, "mask_prefix", n, dev)
    host = None
    if host_rows is not None:
        pos_h, win_h = list(host_rows[0]), list(host_rows[1])
        if len(pos_h) != n or len(win_h) != n:
            raise ValueError(f"host_rows must hold {n} row positions and {n} windows")
        if n and (min(pos_h) < 0 or max(pos_h) >= req_to_token.shape[1] or min(win_h) < 0):
            raise ValueError(f"host_rows must hold row positions in [0, {req_to_token.shape[1]}) and windows >= 0")
        # the window rule of `lo` below, on the host
        host = (pos_h, [max(0, t - w + 1) if w > 0 else 0 for t, w in zip(pos_h, win_h)])
    if n and host is None:
        if int(rr.min()) < 0 or int(rr.max()) >= req_to_token.shape[0]:
            raise ValueError(f"row_req must index req_to_token's {req_to_token.shape[0]} rows")
        if int(rp.min()) < 0 or int(rp.max()) >= req_to_token.shape[1]:
            raise ValueError(f"row_pos must be in [0, {req_to_token.shape[1]})")
        if int(win.min()) < 0:
            raise ValueError("window must be >= 0")
        if int(mp.min()) < 0:
            raise ValueError("mask_prefix must be >= 0")
    lo = torch.where(win > 0, (rp - win + 1).clamp(min=0), torch.zeros_like(rp))

    if head_ids is None:
        hid = torch.arange(hq, dtype=torch.int64, device=dev)
    else:
        hid = torch.as_tensor(head_ids, device=dev)
        if hid.dtype.is_floating_point or hid.dtype == torch.bool:
            raise ValueError("head_ids must hold integers")
        hid = hid.reshape(-1).to(torch.int64)
        if hid.numel() == 0:
            raise ValueError("head_ids must not be empty")
        if host is None:
            if int(hid.min()) < 0 or int(hid.max()) >= hq:
                raise ValueError(f"head_ids must be in [0, {hq})")
            if torch.unique(hid).numel() != hid.numel():
                raise ValueError("head_ids must not repeat")
    return Rows(
        q=q, k_buffer=k_buffer, req_to_token=req_to_token, row_req=rr, row_pos=rp, row_lo=lo,
        mask_prefix=mp, head_ids=hid, kv_ids=hid // (hq // hkv), scale=scale, softcap=logit_softcap,
        top_k=top_k, chunk_size=chunk_size, host=host,
    )


def check_head_lse(head_lse: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Accept the attention kernel's lse over all heads [N, Hq] or over the selection [N, H_sel]."""
    hq = rows.q.shape[1]
    if not isinstance(head_lse, torch.Tensor) or head_lse.dim() != 2 or head_lse.shape[0] != rows.n:
        raise ValueError(f"head_lse must be a tensor [{rows.n}, {hq}] or [{rows.n}, {rows.n_heads}]")
    if head_lse.shape[1] == hq:
        return head_lse.to(device=rows.q.device, dtype=torch.float32)[:, rows.head_ids].contiguous()
    if head_lse.shape[1] == rows.n_heads:
        return head_lse.to(device=rows.q.device, dtype=torch.float32).contiguous()
    raise ValueError(f"head_lse must have {hq} or {rows.n_heads} columns, got {head_lse.shape[1]}")


def softcap_(s: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(s / cap) if cap > 0 else s


def pack_keys(p: torch.Tensor, pos: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort like (p, pos); -1 where not eligible. p must be float32 >= 0."""
    bits = p.contiguous().view(torch.int32).to(torch.int64)
    key = (bits << 32) | pos.to(torch.int64)
    return torch.where(eligible, key, torch.full_like(key, NO_KEY))


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = keys >= 0
    pos = torch.where(valid, keys & POS_MASK, torch.full_like(keys, -1))
    bits = (torch.where(valid, keys, torch.zeros_like(keys)) >> 32).to(torch.int32)
    prob = torch.where(valid, bits.view(torch.float32), torch.zeros((), dtype=torch.float32, device=keys.device))
    return pos, prob


def fingerprint(hist: torch.Tensor, entropy: torch.Tensor, n_keys: torch.Tensor) -> torch.Tensor:
    """[N, 20] version-1 fingerprints from histograms, mean entropies and window sizes."""
    fp = torch.zeros(hist.shape[0], FINGERPRINT_DIM, dtype=torch.float32, device=hist.device)
    fp[:, 0] = hist[:, LOCAL_BINS].sum(1)
    fp[:, 1] = hist[:, MID_BINS].sum(1)
    fp[:, 2] = hist[:, LONG_BINS].sum(1)
    log_n = torch.log(n_keys.to(torch.float32))
    norm = torch.where(n_keys > 1, entropy / torch.where(n_keys > 1, log_n, torch.ones_like(log_n)),
                       torch.zeros_like(entropy))
    fp[:, 3] = norm.clamp(0.0, 1.0)  # rounding can push a uniform row a hair above 1
    fp[:, 4:] = hist
    return fp


def fingerprint_v2(hist: torch.Tensor, head_entropy: torch.Tensor, n_keys: torch.Tensor,
                   sink: "SinkTerms") -> torch.Tensor:
    """[N, 20] version-2 fingerprints: where the attention that does not go to the sink goes
    (math: docs/architecture.md#fingerprint-version-2).

    * histogram (and local/mid/long, its sums): the unmasked non-sink keys' head-averaged
      mass per distance bin, renormalized to sum to 1 (all zero when that mass is below
      MIN_REST_MASS);
    * entropy: per head, the entropy of p_h over the window's non-sink keys renormalized,
      H_rest = (H - E_sink) / (1 - P_sink) + log(1 - P_sink), averaged over heads and
      divided by ln(number of non-sink keys); a head with 1 - P_sink < MIN_REST_MASS counts 0.

    hist [N, 16] over the unmasked keys, head_entropy [N, H] over every key of the window,
    n_keys [N] the window size, sink the rows' SinkTerms for the same heads."""
    rest = (hist - sink.bins).clamp(min=0.0)
    total = rest.sum(1, keepdim=True)
    hist2 = torch.where(total >= MIN_REST_MASS, rest / total.clamp(min=MIN_REST_MASS), torch.zeros_like(rest))
    r = 1.0 - sink.all_mass
    ok = r >= MIN_REST_MASS
    r_safe = r.clamp(min=MIN_REST_MASS)
    h_rest = torch.where(ok, (head_entropy - sink.all_plogp).clamp(min=0.0) / r_safe + torch.log(r_safe),
                         torch.zeros_like(r))
    return fingerprint(hist2, h_rest.clamp(min=0.0).mean(1), n_keys - sink.count)


def finalize(
    rows: Rows,
    head_lse: torch.Tensor,
    hist: torch.Tensor,
    masked: torch.Tensor,
    entropy: torch.Tensor,
    keys: torch.Tensor,
) -> CaptureResult:
    """Assemble the result from the passes' outputs (all small: O(N x (H + k)))."""
    assert hist.shape[1] == N_HIST_BINS
    pos, prob = unpack_keys(keys)
    lse_ref = head_lse.mean(dim=1)
    valid = pos >= 0
    if rows.n_heads == 1 and pos.numel():
        # One head: report that head's raw scaled logits, recomputed at the k positions.
        safe = pos.clamp(min=0)
        slots = rows.req_to_token[rows.row_req[:, None], safe].long()
        k = rows.k_buffer[slots, rows.kv_ids[0]].float()  # [N, k, D]
        qh = rows.q[:, rows.head_ids[0]].float()  # [N, D]
        s = softcap_((k * qh[:, None, :]).sum(-1) * rows.scale, rows.softcap)
        logit = torch.where(valid, s, torch.full_like(s, -math.inf))
    else:
        logit = torch.where(valid, torch.log(prob) + lse_ref[:, None], torch.full_like(prob, -math.inf))
    n_keys = rows.row_pos - rows.row_lo + 1
    head_entropy, entropy = entropy, entropy.mean(dim=1)  # the passes give it per head
    return CaptureResult(
        topk_pos=pos,
        topk_prob=prob,
        topk_logit=logit.float(),
        lse_ref=lse_ref,
        head_lse=head_lse,
        hist=hist,
        entropy=entropy,
        mass_captured=prob.sum(dim=1),
        masked_mass=masked,
        n_keys=n_keys,
        row_pos=rows.row_pos,
        head_entropy=head_entropy,
    )
