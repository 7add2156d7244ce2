"""Triton capture kernels (interpreted on CPU: tiny shapes) against the dense reference
and against the torch implementation."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sgl_kernel import capture_triton  # noqa: E402
from sgl_kernel.attention import decode_attention_fwd  # noqa: E402
from sgl_kernel.capture import attention_capture, decode_capture, extend_capture  # noqa: E402
from sk_dense_ref import check_against_dense, dense_capture, make_cache  # noqa: E402

HQ, HKV, D = 9, 3, 16
SCALE = D ** -0.5
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    # 16-key tiles, so tiny contexts still span several chunks and tiles
    monkeypatch.setattr(capture_triton, "DEFAULT_BLOCK_N", 16)


def _setup(rows_pos, *, dtype=torch.float32, seed=0, n_req=2, max_ctx=80):
    k, table = make_cache(n_req * max_ctx + 3, HKV, D, n_req, max_ctx, dtype=dtype, seed=seed, spread=1.5)
    q = (torch.randn(len(rows_pos), HQ, D, generator=torch.Generator().manual_seed(seed + 1)) * 1.5).to(dtype)
    rp = torch.tensor(rows_pos)
    rr = torch.arange(len(rows_pos)) % n_req
    return q, k, table, rr, rp


def _both(q, k, t, rr, rp, top_k, **kw):
    on = lambda x: x.to(DEV) if isinstance(x, torch.Tensor) else x  # noqa: E731
    tri = attention_capture(on(q), on(k), on(t), on(rr), on(rp), scale=SCALE, top_k=top_k, impl="triton",
                            **{a: on(b) for a, b in kw.items()}).to("cpu")
    ref = attention_capture(q, k, t, rr, rp, scale=SCALE, top_k=top_k, impl="torch", **kw)
    dense = dense_capture(q, k, t, rr, rp, scale=SCALE, window=kw.get("window", 0), head_ids=kw.get("head_ids"),
                          mask_prefix=kw.get("mask_prefix"), logit_softcap=kw.get("logit_softcap", 0.0))
    check_against_dense(tri, dense, top_k)
    # same packed-key tie-breaking in both implementations: identical positions
    assert torch.equal(tri.topk_pos, ref.topk_pos)
    for f in ("topk_prob", "head_lse", "hist", "entropy", "masked_mass", "fingerprint"):
        torch.testing.assert_close(getattr(tri, f), getattr(ref, f), atol=2e-6, rtol=1e-5)
    return tri


def test_gqa_lengths_around_chunk_boundaries():
    _both(*_setup([0, 15, 16, 17, 50]), top_k=5, chunk_size=16)


def test_head_subset_window_mask_fp16():
    q, k, t, rr, rp = _setup([33, 70, 70], dtype=torch.float16)
    _both(q, k, t, rr, rp, top_k=4, chunk_size=32, head_ids=torch.tensor([8, 1, 2]),
          window=torch.tensor([0, 20, 5]), mask_prefix=torch.tensor([10, 60, 0]))


def test_single_head_bf16_softcap():
    q, k, t, rr, rp = _setup([9, 64], dtype=torch.bfloat16)
    _both(q, k, t, rr, rp, top_k=3, chunk_size=16, head_ids=[4], logit_softcap=2.0)


def test_top_k_wider_than_tile():
    # k = 20 widens the top-k buffer to 32 keys; chunk_size 40 rounds up to 64
    _both(*_setup([45, 79]), top_k=20, chunk_size=40)


def test_head_lse_from_triton_decode_attention():
    q, k, t, _, _ = _setup([0, 0])
    v = torch.randn_like(k)
    pool, seq_lens = torch.tensor([0, 1]), torch.tensor([61, 7])
    o = torch.empty_like(q)
    on = lambda x: x.to(DEV)  # noqa: E731
    lse = decode_attention_fwd(on(q), on(k), on(v), on(o), on(t), on(pool), on(seq_lens), scale=SCALE,
                               return_lse=True, impl="triton")
    a = decode_capture(on(q), on(k), on(t), on(pool), on(seq_lens), scale=SCALE, top_k=4, head_lse=lse,
                       chunk_size=16, impl="triton").to("cpu")
    check_against_dense(a, dense_capture(q, k, t, pool, seq_lens - 1, scale=SCALE), 4)


def test_extend_capture_strided():
    k, t = make_cache(2 * 60 + 3, HKV, D, 2, 60, seed=5, spread=1.5)
    seq_lens, ext, start = torch.tensor([30, 20]), torch.tensor([10, 20]), torch.tensor([0, 10])
    qe = torch.randn(30, HQ, D)
    res = extend_capture(qe.to(DEV), k.to(DEV), t.to(DEV), torch.tensor([1, 0]).to(DEV), seq_lens.to(DEV),
                         ext.to(DEV), start.to(DEV), scale=SCALE, top_k=4, stride=4, chunk_size=16,
                         impl="triton").to("cpu")
    assert res.row_pos.tolist() == [20, 24, 28, 0, 4, 8, 12, 16]
    rr = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    check_against_dense(res, dense_capture(qe[res.row_index], k, t, rr, res.row_pos, scale=SCALE), 4)


def test_host_rows_give_the_same_result_without_device_checks():
    # The scheduler passes (row_pos, window) from the host: the same numbers, the chunk
    # grid read from the host lists. Wrong lengths or impossible bounds are still refused.
    q, k, t, rr, rp = _setup([3, 17, 40, 79])
    win = torch.tensor([0, 5, 0, 30])  # row 79's window starts at 50: chunks 3 and 4 only
    on = lambda x: x.to(DEV)  # noqa: E731
    kw = dict(scale=SCALE, top_k=4, chunk_size=16, window=on(win), impl="triton")
    want = attention_capture(on(q), on(k), on(t), on(rr), on(rp), **kw)
    got = attention_capture(on(q), on(k), on(t), on(rr), on(rp), host_rows=(rp.tolist(), win.tolist()), **kw)
    for f in ("topk_pos", "topk_prob", "head_lse", "hist", "entropy", "fingerprint"):
        assert torch.equal(getattr(got, f), getattr(want, f)), f
    with pytest.raises(ValueError, match="host_rows"):
        attention_capture(q, k, t, rr, rp, host_rows=(rp.tolist(), win.tolist()[:3]),
                          **{**kw, "impl": "torch", "window": win})
    with pytest.raises(ValueError, match="host_rows"):
        attention_capture(q, k, t, rr, rp, host_rows=(rp.tolist(), [0, -1, 0, 30]), **{**kw, "impl": "torch",
                                                                                        "window": win})
    with pytest.raises(ValueError, match="host_rows"):
        attention_capture(q, k, t, rr, rp, host_rows=([3, 17, 40, 80], win.tolist()), **{**kw, "impl": "torch",
                                                                                          "window": win})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_rows_capture_never_syncs_the_device():
    # What lets capture kernels queue behind a CUDA graph replay: with host_rows and the
    # attention kernel's lse, a capture call makes no device-to-host synchronisation.
    q, k, t, rr, rp = (x.cuda() for x in _setup([3, 17, 40, 79]))
    lse = torch.randn(4, HQ, device="cuda")
    heads = torch.tensor([0, 4], device="cuda")
    host_rows = ([3, 17, 40, 79], [0] * 4)

    def call():
        return attention_capture(q, k, t, rr, rp, scale=SCALE, top_k=4, chunk_size=16, head_lse=lse,
                                 head_ids=heads, impl="triton", host_rows=host_rows)

    call()  # compiles the kernels outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert res.topk_pos.shape == (4, 4)
