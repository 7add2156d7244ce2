"""Sink terms and the version-2 (sink-aware) fingerprint against the float64 dense reference,
for the torch and the Triton (interpreted on CPU) capture implementations."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sgl_kernel.capture import attention_capture
from sgl_kernel.capture_common import fingerprint_v2
from sgl_kernel.sinks import sink_mass, sink_terms, sink_terms_ref
from sk_dense_ref import dense_capture, dense_fingerprint_v2, make_cache

HQ, HKV, D = 9, 3, 64
SCALE = D ** -0.5


def _case(rows_pos, seed=0, n_req=2, max_ctx=300, sink_boost=0.0):
    k, table = make_cache(n_req * max_ctx + 7, HKV, D, n_req, max_ctx, seed=seed, spread=1.5)
    g = torch.Generator().manual_seed(seed + 1)
    q = torch.randn(len(rows_pos), HQ, D, generator=g) * 1.5
    if sink_boost:  # make position 0 a real sink: its key aligned with every query
        for r in range(n_req):
            slot = int(table[r, 0])
            k[slot] = q.mean(0).view(HKV, HQ // HKV, D).mean(1) * sink_boost
    return q, k, table, torch.arange(len(rows_pos)) % n_req, torch.tensor(rows_pos)


IMPLS = ["torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available() else [])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_sink,window,mask,heads", [
    (1, 0, 0, None), (0, 0, 0, None), (3, 0, 0, None), (1, 0, 5, None), (4, 0, 2, None),
    (2, 50, 0, None), (1, 0, 0, [1, 4, 7]), (64, 0, 0, None),
])
def test_v2_fingerprint_exact(impl, n_sink, window, mask, heads):
    q, k, table, rr, rp = _case([0, 1, 2, 5, 40, 199, 250, 299], sink_boost=3.0)
    n = rp.numel()
    hid = None if heads is None else torch.tensor(heads)
    kw = dict(scale=SCALE, window=window, head_ids=hid, mask_prefix=torch.full((n,), mask))
    res = attention_capture(q, k, table, rr, rp, top_k=4, chunk_size=64, impl=impl, **kw)
    dense = dense_capture(q, k, table, rr, rp, scale=SCALE, window=window, head_ids=heads,
                          mask_prefix=torch.full((n,), mask))
    terms = sink_terms(q, k, table, rr, rp, scale=SCALE, head_lse=res.head_lse, n_sink=torch.full((n,), n_sink),
                       head_ids=hid, window=torch.full((n,), window), mask_prefix=torch.full((n,), mask))
    fp2 = res.fingerprint_v2(terms)
    for i, ref in enumerate(dense):
        # per-head entropy, the quantity version 2 corrects
        ph = ref.ph
        want = [float(-(x[x > 0] * np.log(x[x > 0])).sum()) for x in ph]
        np.testing.assert_allclose(res.head_entropy[i].double().numpy(), want, atol=3e-5)
        lo = ref.lo
        t = int(rp[i])
        sink_keys = [j for j in range(lo, t + 1) if j < n_sink]
        open_keys = [j for j in sink_keys if j >= mask]
        assert int(terms.count[i]) == len(sink_keys)
        assert float(terms.sink_mass[i]) == pytest.approx(float(ref.p[open_keys].sum()), abs=1e-5)
        np.testing.assert_allclose(fp2[i].double().numpy(), dense_fingerprint_v2(ref, n_sink), atol=2e-4,
                                   err_msg=f"row {i} (t={t})")
    if n_sink == 0:  # no sink: version 2 is version 1 renormalized over the unmasked keys
        v1 = res.fingerprint
        if mask == 0:
            torch.testing.assert_close(fp2, v1, atol=2e-5, rtol=0)


def test_v2_moves_the_sink_out_of_the_long_bins():
    """A row that sends most of its attention to position 0 from far away: version 1 calls
    that long-range mass, version 2 describes the rest of the row."""
    q, k, table, rr, rp = _case([299, 299], sink_boost=4.0)
    res = attention_capture(q, k, table, rr, rp, scale=SCALE, top_k=2, impl="torch")
    terms = sink_terms(q, k, table, rr, rp, scale=SCALE, head_lse=res.head_lse, n_sink=torch.ones(2, dtype=torch.long))
    assert float(terms.sink_mass.min()) > 0.3
    v1, v2 = res.fingerprint, res.fingerprint_v2(terms)
    # d = 299 from position 0: bin 8, a long bin
    assert bool((v1[:, 2] - v2[:, 2] * (1 - terms.sink_mass)).ge(terms.sink_mass - 1e-4).all())
    torch.testing.assert_close(v2[:, :3].sum(1), torch.ones(2), atol=1e-5, rtol=0)


def test_sink_mass_wrapper_and_unwritten_slots_stay_finite():
    """sink_mass is sink_terms' mean over heads; keys past t (unwritten, NaN slots) never leak in."""
    q, k, table, rr, rp = _case([0, 3], max_ctx=40)
    k[table[0, 1:8].long()] = float("nan")  # request 0's positions 1..7 are not written yet at t = 0
    lse = attention_capture(q[:1], k, table, rr[:1], rp[:1], scale=SCALE, top_k=0, impl="torch").head_lse
    n_sink = torch.tensor([4])
    m = sink_mass(q[:1], k, table, rr[:1], rp[:1], scale=SCALE, head_lse=lse, n_sink=n_sink)
    terms = sink_terms(q[:1], k, table, rr[:1], rp[:1], scale=SCALE, head_lse=lse, n_sink=n_sink)
    assert torch.isfinite(m).all() and float(m[0]) == pytest.approx(1.0, abs=1e-5)  # t = 0: the only key is a sink
    assert torch.equal(terms.sink_mass, m) and int(terms.count[0]) == 1
    fp = fingerprint_v2(torch.zeros(1, 16), torch.zeros(1, HQ), torch.ones(1, dtype=torch.long), terms)
    assert torch.isfinite(fp).all() and float(fp.abs().sum()) == 0.0  # nothing but the sink: an empty reading


@pytest.mark.parametrize("window,mask,heads,softcap,max_sink,table_dtype", [
    (0, 0, None, 0.0, None, torch.int32), (50, 3, None, 0.0, None, torch.int64), (0, 2, [1, 4, 7], 0.0, None, torch.int32),
    (0, 0, [8], 30.0, None, torch.int64), (0, 0, None, 0.0, 2, torch.int32), (0, 0, None, 0.0, 0, torch.int32),
])
def test_cpu_kernel_equals_the_torch_reference(window, mask, heads, softcap, max_sink, table_dtype):
    """sink_terms on CPU in float32 runs csrc/sinks_cpu.cpp: every field equals
    sink_terms_ref (same math, float32 rounding apart) for each option, and an empty batch."""
    from sgl_kernel.sinks import _cpu_kernel

    q, k, table, rr, rp = _case([0, 1, 2, 5, 40, 199, 250, 299], sink_boost=3.0)
    if _cpu_kernel(q, k) is None:
        pytest.skip("the C++ CPU kernels do not build here")
    table = table.to(table_dtype)
    n = rp.numel()
    hid = None if heads is None else torch.tensor(heads)
    lse = attention_capture(q, k, table, rr, rp, scale=SCALE, top_k=0, impl="torch", head_ids=hid,
                            window=window, logit_softcap=softcap).head_lse
    kw = dict(scale=SCALE, head_lse=lse, n_sink=torch.tensor([0, 1, 2, 3, 4, 1, 64, 5]), head_ids=hid,
              window=torch.full((n,), window), mask_prefix=torch.full((n,), mask), logit_softcap=softcap,
              max_sink=max_sink)
    got, want = sink_terms(q, k, table, rr, rp, **kw), sink_terms_ref(q, k, table, rr, rp, **kw)
    for f in ("mass", "bins", "all_mass", "all_plogp"):
        torch.testing.assert_close(getattr(got, f), getattr(want, f), atol=2e-6, rtol=1e-5, msg=f)
    assert torch.equal(got.count, want.count)
    if max_sink != 0:
        assert float(want.mass.sum()) > 0  # the case is not trivially zero
    empty = sink_terms(q[:0], k, table, rr[:0], rp[:0], scale=SCALE, head_lse=lse[:0], n_sink=torch.zeros(0, dtype=torch.long),
                       head_ids=hid)
    assert empty.mass.shape == (0, lse.shape[1]) and empty.bins.shape == (0, 16)
