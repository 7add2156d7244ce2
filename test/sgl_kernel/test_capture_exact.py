"""The torch capture implementation against the float64 dense reference (CPU, fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgl_kernel.capture import attention_capture, decode_capture, extend_capture, extend_rows
from sk_dense_ref import check_against_dense, dense_capture, make_cache

HQ, HKV, D = 9, 3, 64  # SmolLM2's GQA: 9 query heads on 3 KV heads
SCALE = D ** -0.5


def _setup(rows_pos, *, dtype=torch.float32, seed=0, spread=2.0, n_req=2, max_ctx=700):
    k, table = make_cache(n_req * max_ctx + 13, HKV, D, n_req, max_ctx, dtype=dtype, seed=seed, spread=spread)
    g = torch.Generator().manual_seed(seed + 1)
    q = (torch.randn(len(rows_pos), HQ, D, generator=g) * spread).to(dtype)
    row_pos = torch.tensor(rows_pos)
    row_req = torch.arange(len(rows_pos)) % n_req
    return q, k, table, row_req, row_pos


def _run(q, k, table, rr, rp, top_k=10, **kw):
    res = attention_capture(q, k, table, rr, rp, scale=SCALE, top_k=top_k, impl="torch", **kw)
    dense = dense_capture(q, k, table, rr, rp, scale=SCALE, window=kw.get("window", 0),
                          head_ids=kw.get("head_ids"), mask_prefix=kw.get("mask_prefix"),
                          logit_softcap=kw.get("logit_softcap", 0.0))
    check_against_dense(res, dense, top_k)
    return res, dense


def test_gqa_all_heads_lengths_not_multiple_of_chunk():
    # lengths 1, 2, around and across chunk boundaries (chunk 64), and a long one
    q, k, t, rr, rp = _setup([0, 1, 63, 64, 65, 130, 511, 677])
    res, dense = _run(q, k, t, rr, rp, chunk_size=64)
    assert res.topk_pos[0].tolist()[0] == 0 and res.topk_pos[0, 1:].eq(-1).all()  # length 1
    assert res.entropy[0] == 0 and res.fingerprint[0, 3] == 0
    assert math.isclose(float(res.topk_prob[0, 0]), 1.0, abs_tol=1e-6)


def test_head_subset_and_single_head_logits():
    q, k, t, rr, rp = _setup([5, 200, 333])
    _run(q, k, t, rr, rp, head_ids=torch.tensor([8, 0, 4]), chunk_size=50)
    res, _ = _run(q, k, t, rr, rp, head_ids=torch.tensor([7]), chunk_size=50)
    # one head: lse_ref is that head's lse
    assert torch.equal(res.lse_ref, res.head_lse[:, 0])


def test_uneven_head_subset_on_gqa_groups():
    # two heads from KV group 0, one from group 2: groups of different sizes
    q, k, t, rr, rp = _setup([90, 257])
    _run(q, k, t, rr, rp, head_ids=[1, 2, 7], chunk_size=32)


@pytest.mark.parametrize("window", [1, 7, 100])
def test_windows(window):
    q, k, t, rr, rp = _setup([0, 3, 99, 100, 450])
    res, _ = _run(q, k, t, rr, rp, window=window, chunk_size=64)
    assert res.n_keys.tolist() == [min(window, x + 1) for x in rp.tolist()]


def test_per_row_window_tensor():
    q, k, t, rr, rp = _setup([40, 300, 300, 600])
    _run(q, k, t, rr, rp, window=torch.tensor([0, 16, 257, 5]), chunk_size=64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    q, k, t, rr, rp = _setup([17, 400], dtype=dtype)
    _run(q, k, t, rr, rp, chunk_size=128)


def test_masked_prefix():
    q, k, t, rr, rp = _setup([10, 200, 200, 50, 3])
    mp = torch.tensor([0, 50, 199, 51, 0])  # row 3: the whole window is masked
    res, dense = _run(q, k, t, rr, rp, mask_prefix=mp, chunk_size=64)
    assert res.topk_pos[3].eq(-1).all() and res.hist[3].sum() == 0
    assert math.isclose(float(res.masked_mass[3]), 1.0, abs_tol=1e-5)
    assert (res.topk_pos[1][res.topk_pos[1] >= 0] >= 50).all()
    assert float(res.masked_mass[1]) > 0.05  # a real share of the mass sits in the prefix


def test_masked_prefix_with_window():
    q, k, t, rr, rp = _setup([300, 300])
    _run(q, k, t, rr, rp, mask_prefix=torch.tensor([280, 100]), window=30, chunk_size=16)


def test_softcap():
    q, k, t, rr, rp = _setup([120, 260], spread=4.0)
    _run(q, k, t, rr, rp, logit_softcap=5.0, chunk_size=64)


def test_k_larger_than_window_pads_and_k_zero():
    q, k, t, rr, rp = _setup([2, 40])
    res, _ = _run(q, k, t, rr, rp, top_k=20, window=8)
    assert res.topk_pos[0, 3:].eq(-1).all() and res.topk_pos[1, 8:].eq(-1).all()
    assert torch.isclose(res.mass_captured, torch.ones(2), atol=1e-5).all()
    res0, _ = _run(q, k, t, rr, rp, top_k=0)
    assert res0.topk_pos.shape == (2, 0) and res0.mass_captured.eq(0).all()


def test_result_does_not_depend_on_chunk_size():
    q, k, t, rr, rp = _setup([333, 601], spread=3.0)
    kw = dict(scale=SCALE, top_k=16, impl="torch")
    a = attention_capture(q, k, t, rr, rp, chunk_size=7, **kw)
    b = attention_capture(q, k, t, rr, rp, chunk_size=2048, **kw)
    assert torch.equal(a.topk_pos, b.topk_pos)
    for f in ("topk_prob", "head_lse", "hist", "entropy", "fingerprint"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), atol=2e-6, rtol=1e-5)


def test_peaked_attention_finds_planted_keys():
    # plant keys equal to a scaled copy of the query: they must dominate the top-k
    q, k, t, rr, rp = _setup([500], spread=1.0)
    planted = [3, 77, 250, 499]
    for j in planted:
        k[t[0, j].long()] = q[0].reshape(HKV, HQ // HKV, D)[:, 0] * 3
    res, _ = _run(q, k, t, rr, rp, top_k=4, head_ids=[0, 3, 6])
    assert set(res.topk_pos[0].tolist()) == set(planted)
    assert float(res.mass_captured[0]) > 0.5


def test_head_lse_from_attention_skips_first_pass_with_same_result():
    q, k, t, rr, rp = _setup([44, 310])
    dense = dense_capture(q, k, t, rr, rp, scale=SCALE)
    full = torch.tensor(np.stack([d.head_lse for d in dense]), dtype=torch.float32)  # [N, Hq]
    res = attention_capture(q, k, t, rr, rp, scale=SCALE, top_k=10, head_lse=full, impl="torch")
    check_against_dense(res, dense, 10)
    sub = attention_capture(q, k, t, rr, rp, scale=SCALE, top_k=10, head_lse=full, head_ids=[2, 5], impl="torch")
    check_against_dense(sub, dense_capture(q, k, t, rr, rp, scale=SCALE, head_ids=[2, 5]), 10)
    with pytest.raises(ValueError, match="window"):
        attention_capture(q, k, t, rr, rp, scale=SCALE, top_k=10, head_lse=full, window=8, impl="torch")


def test_decode_capture_rows():
    q, k, t, _, _ = _setup([0, 0, 0])
    seq_lens = torch.tensor([1, 300, 42])
    pool = torch.tensor([1, 0, 1])
    res = decode_capture(q, k, t, pool, seq_lens, scale=SCALE, top_k=5, impl="torch")
    assert res.row_pos.tolist() == [0, 299, 41]
    check_against_dense(res, dense_capture(q, k, t, pool, seq_lens - 1, scale=SCALE), 5)


def test_extend_rows_stride_is_absolute():
    # request 0: prefix 5, 7 new tokens at rows 0..6; request 1: no prefix, 4 tokens at rows 7..10
    idx, b, pos = extend_rows(torch.tensor([12, 4]), torch.tensor([7, 4]), torch.tensor([0, 7]), stride=3,
                              include_last=True)
    assert pos.tolist() == [6, 9, 11, 0, 3]
    assert idx.tolist() == [1, 4, 6, 7, 10]
    assert b.tolist() == [0, 0, 0, 1, 1]


def test_extend_capture_matches_dense_per_prompt_position():
    k, t = make_cache(2 * 300 + 5, HKV, D, 2, 300, seed=3, spread=2.0)
    seq_lens, ext, start = torch.tensor([40, 25]), torch.tensor([12, 25]), torch.tensor([0, 12])
    qe = torch.randn(37, HQ, D) * 2
    mp = torch.tensor([30, 0])
    res = extend_capture(qe, k, t, torch.tensor([1, 0]), seq_lens, ext, start, scale=SCALE, top_k=6,
                         mask_prefix=mp, window=torch.tensor([0, 9]), chunk_size=16, impl="torch")
    assert res.row_index.tolist() == list(range(37))
    assert res.row_pos.tolist() == list(range(28, 40)) + list(range(25))
    rr = torch.tensor([1] * 12 + [0] * 25)
    dense = dense_capture(qe, k, t, rr, res.row_pos, scale=SCALE, mask_prefix=mp[[0] * 12 + [1] * 25],
                          window=torch.tensor([0] * 12 + [9] * 25))
    check_against_dense(res, dense, 6)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(top_k=-1), "top_k"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(head_ids=[9]), "head_ids"),
        (dict(head_ids=[1, 1]), "head_ids"),
        (dict(head_ids=[]), "head_ids"),
        (dict(window=-2), "window"),
        (dict(mask_prefix=torch.tensor([0.5, 1.0])), "mask_prefix"),
        (dict(row_pos=torch.tensor([0, 700])), "row_pos"),
        (dict(row_req=torch.tensor([0, 2])), "row_req"),
        (dict(scale=float("nan")), "scale"),
        (dict(logit_softcap=-1.0), "logit_softcap"),
        (dict(impl="cuda"), "impl"),
        (dict(head_lse=torch.zeros(2, 4)), "head_lse"),
    ],
)
def test_bad_input_raises_value_error_naming_it(kw, match):
    q, k, t, rr, rp = _setup([3, 4])
    args = dict(row_req=rr, row_pos=rp, scale=SCALE, top_k=3, impl="torch")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        attention_capture(q, k, t, **args)


def test_bad_tensor_shapes():
    q, k, t, rr, rp = _setup([3, 4])
    with pytest.raises(ValueError, match="q must"):
        attention_capture(q[0], k, t, rr, rp, scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="head dim"):
        attention_capture(q, k[..., :32], t, rr, rp, scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="multiple"):
        attention_capture(q[:, :8], k, t, rr, rp, scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="req_to_token"):
        attention_capture(q, k, t.float(), rr, rp, scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="row_pos"):
        attention_capture(q, k, t, rr, torch.tensor([1, 2, 3]), scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="seq_lens"):
        decode_capture(q, k, t, rr, torch.tensor([0, 5]), scale=SCALE, top_k=3)
    with pytest.raises(ValueError, match="stride"):
        extend_rows(torch.tensor([4]), torch.tensor([4]), torch.tensor([0]), stride=0)


def test_empty_batch():
    q, k, t, _, _ = _setup([1])
    res = attention_capture(q[:0], k, t, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                            scale=SCALE, top_k=4, impl="torch")
    assert res.topk_pos.shape == (0, 4) and res.fingerprint.shape == (0, 20)


@pytest.mark.parametrize("kw", [
    {},
    {"head_ids": [1, 2, 7]},  # uneven groups: the scattered query layout
    {"head_ids": [4]},
    {"window": 100, "mask_prefix": torch.tensor([3, 0, 50, 0, 7, 0])},
    {"logit_softcap": 5.0},
], ids=["all_heads", "uneven_heads", "one_head", "window_mask", "softcap"])
def test_short_windows_take_the_one_pass_path(monkeypatch, kw):
    # every window fits in one tile (<= 1024 positions): scored once, same exact numbers
    import sgl_kernel.capture_torch as ct

    def no_second_scoring(*a, **k):
        raise AssertionError("the two-pass path ran")

    monkeypatch.setattr(ct, "lse_pass", no_second_scoring)
    monkeypatch.setattr(ct, "stats_pass", no_second_scoring)
    q, k, t, rr, rp = _setup([0, 5, 255, 256, 600, 699], n_req=3)
    _run(q, k, t, rr, rp, chunk_size=2048, **kw)
    with pytest.raises(AssertionError, match="two-pass"):  # beyond the bound: the streaming passes
        _run(q, k, t, rr, rp, chunk_size=512, **kw)
