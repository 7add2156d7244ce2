"""Float64 dense reference for attention capture, written independently of sgl_kernel.

For each row it builds the whole score matrix [heads, positions 0..t] in float64, takes
the softmax over the window, and derives every capture field from the dense
probabilities. Also the shared comparison used by the capture tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DenseRow:
    p: np.ndarray  # [t+1] head-averaged probability (0 outside the window)
    head_lse: np.ndarray  # [H_sel]
    head_logits: np.ndarray  # [H_sel, t+1] scaled (soft-capped) logits
    hist: np.ndarray  # [16] over unmasked keys
    masked: float
    entropy: float
    n_keys: int
    eligible: np.ndarray  # [t+1] bool: in window and not masked
    ph: np.ndarray  # [H_sel, t+1] each head's probability (0 outside the window)
    lo: int  # first position of the window
    mask_prefix: int


def dense_fingerprint_v2(ref: DenseRow, n_sink: int) -> np.ndarray:
    """The version-2 (sink-aware) fingerprint of one dense row, straight from its definition:
    histogram over the unmasked non-sink keys renormalized; per head the entropy of p_h over
    the non-sink keys renormalized, averaged, over ln(number of non-sink keys)."""
    t = ref.p.shape[0] - 1
    rest = np.array([ref.lo <= j <= t and j >= n_sink for j in range(t + 1)])
    hist = np.zeros(16)
    for j in np.nonzero(rest & (np.arange(t + 1) >= ref.mask_prefix))[0]:
        hist[dist_bin(t - int(j))] += ref.p[j]
    hist = hist / hist.sum() if hist.sum() >= 1e-4 else np.zeros(16)
    ents = []
    for h in range(ref.ph.shape[0]):
        m = ref.ph[h, rest].sum()
        if m < 1e-4:
            ents.append(0.0)
            continue
        qh = ref.ph[h, rest] / m
        qh = qh[qh > 0]
        ents.append(float(-(qh * np.log(qh)).sum()))
    n_rest = int(rest.sum())
    norm = 0.0 if n_rest <= 1 else min(1.0, float(np.mean(ents)) / math.log(n_rest))
    fp = np.zeros(20)
    fp[0], fp[1], fp[2], fp[3] = hist[0:3].sum(), hist[3:8].sum(), hist[8:16].sum(), norm
    fp[4:] = hist
    return fp


def dist_bin(d: int) -> int:
    return 0 if d < 2 else min(d.bit_length() - 1, 15)


def dense_capture(q, k_buffer, req_to_token, row_req, row_pos, *, scale, window=0, head_ids=None,
                  mask_prefix=None, logit_softcap=0.0) -> list[DenseRow]:
    n, hq, d = q.shape
    hkv = k_buffer.shape[1]
    heads = list(range(hq)) if head_ids is None else [int(h) for h in head_ids]
    out = []
    for i in range(n):
        t = int(row_pos[i])
        r = int(row_req[i])
        w = int(window[i]) if isinstance(window, torch.Tensor) else int(window)
        mp = 0 if mask_prefix is None else int(mask_prefix[i])
        lo = max(0, t - w + 1) if w > 0 else 0
        slots = req_to_token[r, : t + 1].long()
        keys = k_buffer[slots].double()  # [t+1, Hkv, D]
        qi = q[i].double()  # [Hq, D]
        full = torch.einsum("hd,jhd->hj", qi, keys.repeat_interleave(hq // hkv, dim=1)) * scale
        if logit_softcap > 0:
            full = logit_softcap * torch.tanh(full / logit_softcap)
        s = full[heads].numpy()  # [H_sel, t+1]
        in_w = np.arange(t + 1) >= lo
        s_w = np.where(in_w[None, :], s, -np.inf)
        mx = s_w.max(axis=1, keepdims=True)
        lse = (mx + np.log(np.exp(s_w - mx).sum(axis=1, keepdims=True)))[:, 0]
        ph = np.exp(s_w - lse[:, None])  # 0 outside the window
        p = ph.mean(axis=0)
        logp = np.where(ph > 0, np.log(np.where(ph > 0, ph, 1.0)), 0.0)
        ent = float((-(ph * logp).sum(axis=1)).mean())
        masked_pos = np.arange(t + 1) < mp
        hist = np.zeros(16)
        for j in range(lo, t + 1):
            if not masked_pos[j]:
                hist[dist_bin(t - j)] += p[j]
        out.append(DenseRow(p=p, head_lse=lse, head_logits=s, hist=hist, masked=float(p[masked_pos].sum()),
                            entropy=ent, n_keys=t - lo + 1, eligible=in_w & ~masked_pos, ph=ph, lo=lo,
                            mask_prefix=mp))
    return out


def check_against_dense(res, dense: list[DenseRow], top_k: int, *, prob_tol: float = 1e-5,
                        lse_tol: float = 2e-5, ent_tol: float = 2e-5) -> None:
    """Assert every capture field of ``res`` matches the dense float64 reference."""
    from sgl_kernel.zones import fingerprint_from_hist

    assert res.topk_pos.shape == (len(dense), top_k)
    for i, ref in enumerate(dense):
        pos = res.topk_pos[i].tolist()
        prob = res.topk_prob[i].double().numpy()
        n_elig = int(ref.eligible.sum())
        kk = min(top_k, n_elig)
        # padding exactly where fewer than k eligible keys exist
        assert all(x >= 0 for x in pos[:kk]) and all(x == -1 for x in pos[kk:]), (i, pos, kk)
        assert np.all(prob[kk:] == 0)
        got = pos[:kk]
        assert len(set(got)) == kk
        assert all(ref.eligible[j] for j in got), "a masked or out-of-window key entered the top-k"
        # probabilities at the returned positions, largest first
        np.testing.assert_allclose(prob[:kk], ref.p[got], atol=prob_tol, rtol=0)
        assert np.all(np.diff(prob[:kk]) <= 0)
        if kk:
            cand = np.sort(ref.p[ref.eligible])[::-1]
            kth = cand[kk - 1]
            must = set(np.nonzero(ref.eligible & (ref.p > kth + prob_tol))[0].tolist())
            assert must <= set(got), f"row {i}: untied top-k keys missing: {sorted(must - set(got))}"
            assert min(ref.p[got]) >= kth - prob_tol
        np.testing.assert_allclose(res.head_lse[i].double().numpy(), ref.head_lse, atol=lse_tol, rtol=1e-6)
        np.testing.assert_allclose(res.hist[i].double().numpy(), ref.hist, atol=prob_tol, rtol=0)
        assert abs(float(res.hist[i].sum()) + float(res.masked_mass[i]) - 1.0) < 3e-5
        assert abs(float(res.masked_mass[i]) - ref.masked) < prob_tol
        assert abs(float(res.entropy[i]) - ref.entropy) < ent_tol, (float(res.entropy[i]), ref.entropy)
        assert int(res.n_keys[i]) == ref.n_keys
        assert abs(float(res.mass_captured[i]) - float(ref.p[got].sum())) < prob_tol * max(kk, 1)
        lse_ref = float(ref.head_lse.mean())
        assert abs(float(res.lse_ref[i]) - lse_ref) < lse_tol
        # exp(topk_logit - lse_ref) == topk_prob; with one head the logits are the raw scores
        lg = res.topk_logit[i].double().numpy()
        assert np.all(np.isneginf(lg[kk:]))
        np.testing.assert_allclose(np.exp(lg[:kk] - float(res.lse_ref[i])), prob[:kk], rtol=1e-4, atol=1e-7)
        if len(ref.head_lse) == 1:
            np.testing.assert_allclose(lg[:kk], ref.head_logits[0, got], atol=1e-4, rtol=1e-5)
        ent_norm = 0.0 if ref.n_keys == 1 else ref.entropy / math.log(ref.n_keys)
        np.testing.assert_allclose(res.fingerprint[i].double().numpy(),
                                   fingerprint_from_hist(ref.hist, min(1.0, ent_norm)), atol=3e-5, rtol=0)


def make_cache(n_slots: int, hkv: int, d: int, n_req: int, max_ctx: int, *, dtype=torch.float32, seed: int = 0,
               spread: float = 1.0):
    """Random K cache and a req_to_token table mapping each request to shuffled slots."""
    g = torch.Generator().manual_seed(seed)
    k = (torch.randn(n_slots, hkv, d, generator=g) * spread).to(dtype)
    perm = torch.randperm(n_slots, generator=g)[: n_req * max_ctx]
    return k, perm.to(torch.int32).reshape(n_req, max_ctx)
