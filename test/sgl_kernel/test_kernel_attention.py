"""Decode/extend attention over the paged cache: the torch reference against torch's SDPA
and a float64 softmax, and the Triton kernels (interpreted on CPU, tiny) against it."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from sgl_kernel.attention import decode_attention_fwd, extend_attention_fwd
from sk_dense_ref import make_cache

HQ, HKV = 9, 3
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")


def _cache(d, dv, n_req, max_ctx, dtype=torch.float32, seed=0):
    k, table = make_cache(n_req * max_ctx + 5, HKV, d, n_req, max_ctx, dtype=dtype, seed=seed)
    v = torch.randn(k.shape[0], HKV, dv, generator=torch.Generator().manual_seed(seed + 7)).to(dtype)
    return k, v, table


def _dense64(q, k, v, allowed, scale, cap=0.0):
    """q [m, Hq, D], k/v [L, Hkv, *] -> float64 (o [m, Hq, Dv], lse [m, Hq])."""
    g = HQ // HKV
    s = torch.einsum("mhd,lhd->mhl", q.double(), k.double().repeat_interleave(g, 1)) * scale
    if cap:
        s = cap * torch.tanh(s / cap)
    s = s.masked_fill(~allowed[:, None, :], -torch.inf)
    lse = torch.logsumexp(s, -1)
    return torch.einsum("mhl,lhd->mhd", torch.exp(s - lse[..., None]), v.double().repeat_interleave(g, 1)), lse


def test_torch_decode_equals_sdpa():
    d = 64
    k, v, t = _cache(d, d, 3, 300)
    q = torch.randn(3, HQ, d)
    pool, lens = torch.tensor([2, 0, 1]), torch.tensor([300, 1, 77])
    o = torch.empty_like(q)
    lse = decode_attention_fwd(q, k, v, o, t, pool, lens, scale=0.125, return_lse=True, impl="torch")
    for b in range(3):
        slots = t[pool[b], : lens[b]].long()
        kk, vv = k[slots].transpose(0, 1)[None], v[slots].transpose(0, 1)[None]
        ref = F.scaled_dot_product_attention(q[b][None, :, None], kk, vv, scale=0.125, enable_gqa=True)[0, :, 0]
        torch.testing.assert_close(o[b], ref, atol=1e-5, rtol=1e-5)
        _, l64 = _dense64(q[b : b + 1], k[slots], v[slots], torch.ones(1, len(slots), dtype=torch.bool), 0.125)
        torch.testing.assert_close(lse[b].double(), l64[0], atol=1e-5, rtol=1e-6)


def test_torch_extend_with_prefix_equals_sdpa():
    d = 32
    k, v, t = _cache(d, d, 2, 600)
    lens, ext, start = torch.tensor([530, 40]), torch.tensor([300, 40]), torch.tensor([0, 300])
    qe = torch.randn(340, HQ, d)
    o = torch.empty_like(qe)
    pool = torch.tensor([1, 0])
    lse = extend_attention_fwd(qe, k, v, o, t, pool, lens, ext, start, scale=0.2, return_lse=True, impl="torch")
    for b in range(2):
        n, e, st = int(lens[b]), int(ext[b]), int(start[b])
        slots = t[pool[b], :n].long()
        allowed = torch.arange(n)[None, :] <= (torch.arange(e) + n - e)[:, None]
        kk, vv = k[slots].transpose(0, 1)[None], v[slots].transpose(0, 1)[None]
        ref = F.scaled_dot_product_attention(qe[st : st + e].transpose(0, 1)[None], kk, vv, attn_mask=allowed,
                                             scale=0.2, enable_gqa=True)[0].transpose(0, 1)
        torch.testing.assert_close(o[st : st + e], ref, atol=1e-5, rtol=1e-5)
        _, l64 = _dense64(qe[st : st + e], k[slots], v[slots], allowed, 0.2)
        torch.testing.assert_close(lse[st : st + e].double(), l64, atol=1e-5, rtol=1e-6)


def test_torch_softcap_matches_float64():
    d = 16
    k, v, t = _cache(d, 8, 1, 50)
    q = torch.randn(1, HQ, d) * 4
    o = torch.empty(1, HQ, 8)
    lse = decode_attention_fwd(q, k, v, o, t, torch.tensor([0]), torch.tensor([50]), scale=0.5, logit_softcap=3.0,
                               return_lse=True, impl="torch")
    slots = t[0].long()
    o64, l64 = _dense64(q, k[slots], v[slots], torch.ones(1, 50, dtype=torch.bool), 0.5, cap=3.0)
    torch.testing.assert_close(o.double(), o64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), l64, atol=1e-5, rtol=1e-6)


def _on(*xs):
    return [x.to(DEV) for x in xs]


@needs_triton
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float16, 3e-3)])
def test_triton_decode_matches_reference(dtype, tol):
    d, dv = 16, 8
    k, v, t = _cache(d, dv, 3, 60, dtype=dtype)
    q = torch.randn(3, HQ, d).to(dtype)
    pool, lens = torch.tensor([1, 2, 0]), torch.tensor([60, 3, 33])  # 3 keys < 8 splits: empty splits
    o_ref, o_tri = torch.empty(3, HQ, dv, dtype=dtype), torch.empty(3, HQ, dv, dtype=dtype, device=DEV)
    l_ref = decode_attention_fwd(q, k, v, o_ref, t, pool, lens, scale=0.25, logit_softcap=4.0, return_lse=True,
                                 impl="torch")
    l_tri = decode_attention_fwd(*_on(q, k, v), o_tri, *_on(t, pool, lens), scale=0.25, logit_softcap=4.0,
                                 return_lse=True, impl="triton")
    torch.testing.assert_close(o_tri.cpu().float(), o_ref.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(l_tri.cpu(), l_ref, atol=2e-5, rtol=1e-5)
    assert decode_attention_fwd(*_on(q, k, v), o_tri, *_on(t, pool, lens), scale=0.25, impl="triton") is None


@needs_triton
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float16, 2e-3)])
def test_triton_decode_stats_equal_the_capture_kernel(dtype, tol):
    # the statistics decode computes from its own probabilities (online, merged across key
    # splits) are fingerprint-mode capture: the same as sgl_kernel.capture.decode_capture,
    # which re-reads K, on lengths that leave some splits empty and masks of every kind
    from sgl_kernel.attention_triton import STATS_DIM
    from sgl_kernel.attention_triton import decode_attention_fwd as triton_decode
    from sgl_kernel.capture import decode_capture, fingerprints_from_stats

    d = 16
    lens = [1, 2, 3, 40, 75]
    k, v, t = _cache(d, d, len(lens), 80, dtype=dtype, seed=3)
    k = k * 3  # peaked rows: entropy far from log n
    q = torch.randn(len(lens), HQ, d).to(dtype)
    pool, seq = torch.arange(len(lens)), torch.tensor(lens)
    mask = torch.tensor([0, 1, 0, 10, 74])
    o_plain = torch.empty(len(lens), HQ, d, dtype=dtype, device=DEV)
    o = torch.empty_like(o_plain)
    stats = torch.full((len(lens), HQ, STATS_DIM), float("nan"), device=DEV)
    lse = triton_decode(*_on(q, k, v), o, *_on(t, pool, seq), scale=0.25, num_kv_splits=4, return_lse=True,
                        mask_prefix=mask.to(DEV), stats=stats)
    lse_plain = triton_decode(*_on(q, k, v), o_plain, *_on(t, pool, seq), scale=0.25, num_kv_splits=4,
                              return_lse=True)
    assert torch.equal(o, o_plain) and torch.equal(lse, lse_plain)  # statistics never change attention
    ref = decode_capture(q.float(), k.float(), t, pool, seq, scale=0.25, top_k=0, mask_prefix=mask, impl="torch")
    mean = stats.mean(1).cpu()
    torch.testing.assert_close(mean[:, :16], ref.hist, atol=tol, rtol=tol)
    torch.testing.assert_close(mean[:, 16], ref.masked_mass, atol=tol, rtol=tol)
    torch.testing.assert_close(mean[:, 17], ref.entropy, atol=10 * tol, rtol=tol)
    torch.testing.assert_close(fingerprints_from_stats(mean, seq), ref.fingerprint, atol=10 * tol, rtol=tol)
    # two layers x rows in one call give each row's own fingerprint
    two = fingerprints_from_stats(torch.stack([mean, mean]), seq)
    assert two.shape == (2, len(lens), 20) and torch.equal(two[1], two[0])
    with pytest.raises(ValueError, match="stats"):
        triton_decode(*_on(q, k, v), o, *_on(t, pool, seq), scale=0.25, mask_prefix=mask.to(DEV),
                      stats=torch.empty(len(lens), HQ, 16, device=DEV))


@needs_triton
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float16, 3e-3), (torch.bfloat16, 2e-2)])
def test_triton_extend_matches_reference(dtype, tol):
    d = 16
    k, v, t = _cache(d, d, 3, 80, dtype=dtype)
    # request 0: prefix 30 + 20 new; request 1: nothing new; request 2: 37 new, no prefix
    lens, ext, start = torch.tensor([50, 9, 37]), torch.tensor([20, 0, 37]), torch.tensor([0, 20, 20])
    pool = torch.tensor([2, 0, 1])
    qe = torch.randn(57, HQ, d).to(dtype)
    o_ref, o_tri = torch.zeros(57, HQ, d, dtype=dtype), torch.zeros(57, HQ, d, dtype=dtype, device=DEV)
    l_ref = extend_attention_fwd(qe, k, v, o_ref, t, pool, lens, ext, start, scale=0.25, return_lse=True,
                                 impl="torch")
    l_tri = extend_attention_fwd(*_on(qe, k, v), o_tri, *_on(t, pool, lens, ext, start), scale=0.25,
                                 return_lse=True, impl="triton")
    torch.testing.assert_close(o_tri.cpu().float(), o_ref.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(l_tri.cpu(), l_ref, atol=2e-5, rtol=1e-5)


def test_bad_arguments():
    k, v, t = _cache(16, 16, 1, 10)
    q = torch.randn(1, HQ, 16)
    o = torch.empty_like(q)
    one, ten = torch.tensor([0]), torch.tensor([10])
    with pytest.raises(ValueError, match="seq_lens"):
        decode_attention_fwd(q, k, v, o, t, one, torch.tensor([0]), scale=1.0)
    with pytest.raises(ValueError, match="seq_lens"):
        decode_attention_fwd(q, k, v, o, t, one, torch.tensor([11]), scale=1.0)
    with pytest.raises(ValueError, match="o must"):
        decode_attention_fwd(q, k, v, o[:, :, :8], t, one, ten, scale=1.0)
    with pytest.raises(ValueError, match="req_pool_indices"):
        decode_attention_fwd(q, k, v, o, t, torch.tensor([1]), ten, scale=1.0)
    with pytest.raises(ValueError, match="num_kv_splits"):
        decode_attention_fwd(q, k, v, o, t, one, ten, scale=1.0, num_kv_splits=0)
    with pytest.raises(ValueError, match="v_buffer"):
        decode_attention_fwd(q, k, v.half(), o, t, one, ten, scale=1.0)
    with pytest.raises(ValueError, match="extend_seq_lens"):
        extend_attention_fwd(q, k, v, o, t, one, ten, torch.tensor([11]), torch.tensor([0]), scale=1.0)
    with pytest.raises(ValueError, match="run past"):
        extend_attention_fwd(q, k, v, o, t, one, ten, torch.tensor([2]), torch.tensor([0]), scale=1.0)
    with pytest.raises(ValueError, match="impl"):
        decode_attention_fwd(q, k, v, o, t, one, ten, scale=1.0, impl="fast")
