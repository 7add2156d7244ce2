"""sgl_kernel's C++ paged attention (CPU, float32), decode and prefill, against a float64 reference."""
from __future__ import annotations

import math

import pytest
import torch

from sgl_kernel import attention_cpu

pytestmark = pytest.mark.skipif(not attention_cpu.available(), reason="no C++ compiler to build the CPU kernel")


@pytest.mark.parametrize("hq,hkv", [(9, 3), (4, 4), (8, 1)])
@pytest.mark.parametrize("table_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("d", [64, 128, 40])  # the two vector paths and the generic one
def test_decode_attention_matches_dense(hq: int, hkv: int, table_dtype: torch.dtype, d: int) -> None:
    g = torch.Generator().manual_seed(hq * 10 + hkv + d)
    lens = [1, 2, 300, 77, 513]
    pool = 2000
    k = torch.randn(pool, hkv, d, generator=g) * 2
    v = torch.randn(pool, hkv, d, generator=g)
    table = torch.zeros(len(lens) + 4, 600, dtype=table_dtype)
    rows = torch.tensor([5, 1, 7, 0, 3])  # pool rows need not follow the batch order
    perm = torch.randperm(pool - 1, generator=g) + 1
    start = 0
    for r, n in zip(rows.tolist(), lens):
        table[r, :n] = perm[start : start + n].to(table_dtype)
        start += n
    q = torch.randn(len(lens), hq, d, generator=g)
    scale = 1 / math.sqrt(d)
    out, lse = attention_cpu.decode_attention(q, k, v, table, rows, torch.tensor(lens), scale)
    for i, (r, n) in enumerate(zip(rows.tolist(), lens)):
        slots = table[r, :n].long()
        kk = k[slots].double().repeat_interleave(hq // hkv, dim=1)
        vv = v[slots].double().repeat_interleave(hq // hkv, dim=1)
        s = torch.einsum("hd,nhd->hn", q[i].double(), kk) * scale
        torch.testing.assert_close(out[i].double(), torch.einsum("hn,nhd->hd", torch.softmax(s, -1), vv),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lse[i].double(), torch.logsumexp(s, -1), rtol=1e-5, atol=1e-5)


def _extend_case(g: torch.Generator, hq: int, hkv: int, d: int, prefix: list[int], ext: list[int],
                 table_dtype: torch.dtype = torch.int32) -> tuple[torch.Tensor, ...]:
    pool = sum(prefix) + sum(ext) + 50
    k = torch.randn(pool, hkv, d, generator=g) * 2
    v = torch.randn(pool, hkv, d, generator=g)
    rows = torch.tensor([3, 0, 2, 1][: len(ext)])
    table = torch.zeros(4, max(p + e for p, e in zip(prefix, ext)) + 8, dtype=table_dtype)
    perm = torch.randperm(pool - 1, generator=g) + 1  # scattered slots
    start = 0
    for r, p, e in zip(rows.tolist(), prefix, ext):
        table[r, : p + e] = perm[start : start + p + e].to(table_dtype)
        start += p + e
    q = torch.randn(sum(ext), hq, d, generator=g)
    return q, k, v, table, rows, torch.tensor(prefix), torch.tensor(ext)


@pytest.mark.parametrize("hq,hkv", [(9, 3), (4, 4), (8, 1)])
@pytest.mark.parametrize("d", [64, 128, 40])
@pytest.mark.parametrize("table_dtype", [torch.int32, torch.int64])
def test_extend_attention_matches_dense(hq: int, hkv: int, d: int, table_dtype: torch.dtype) -> None:
    """Causal rows after a cached prefix (none, short, long), extends shorter and longer than
    a task's 16-row block, one single-token extend, against float64 softmax(q k^T) v."""
    g = torch.Generator().manual_seed(hq + hkv + d)
    prefix, ext = [0, 5, 130, 0], [37, 1, 20, 16]
    q, k, v, table, rows, pre, ex = _extend_case(g, hq, hkv, d, prefix, ext, table_dtype)
    scale = 1 / math.sqrt(d)
    out, lse = attention_cpu.extend_attention(q, k, v, table, rows, pre, ex, scale)
    assert out.shape == q.shape and lse.shape == q.shape[:2]
    start = 0
    for r, p, e in zip(rows.tolist(), prefix, ext):
        slots = table[r, : p + e].long()
        kk = k[slots].double().repeat_interleave(hq // hkv, dim=1)  # [S, Hq, D]
        vv = v[slots].double().repeat_interleave(hq // hkv, dim=1)
        s = torch.einsum("thd,shd->hts", q[start : start + e].double(), kk) * scale
        causal = torch.arange(p + e)[None, :] <= (p + torch.arange(e))[:, None]  # [e, S]
        s = s.masked_fill(~causal, -torch.inf)
        want = torch.einsum("hts,shd->thd", torch.softmax(s, -1), vv)
        torch.testing.assert_close(out[start : start + e].double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lse[start : start + e].double(), torch.logsumexp(s, -1).T, rtol=1e-5, atol=1e-5)
        start += e


def test_extend_attention_equals_sdpa_path_and_refuses_bad_input() -> None:
    """The backend's SDPA expression gives the same output; bad lengths, rows and slots are
    refused before anything is read."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(11)
    q, k, v, table, rows, pre, ex = _extend_case(g, 9, 3, 64, [0, 40], [70, 9])
    out, _ = attention_cpu.extend_attention(q, k, v, table, rows, pre, ex, 0.125)
    start = 0
    for r, p, e in zip(rows.tolist(), pre.tolist(), ex.tolist()):
        slots = table[r, : p + e].long()
        kk, vv = k[slots].transpose(0, 1)[None], v[slots].transpose(0, 1)[None]
        qi = q[start : start + e].transpose(0, 1)[None]
        mask = torch.arange(p + e)[None, :] <= (p + torch.arange(e))[:, None]
        o = F.scaled_dot_product_attention(qi, kk, vv, attn_mask=mask, scale=0.125, enable_gqa=True)
        torch.testing.assert_close(out[start : start + e], o[0].transpose(0, 1), rtol=1e-5, atol=1e-5)
        start += e
    empty = attention_cpu.extend_attention(q[:0], k, v, table, rows[:0], pre[:0], ex[:0], 0.125)
    assert empty[0].shape == (0, 9, 64)
    with pytest.raises(RuntimeError, match="sum to"):
        attention_cpu.extend_attention(q[:-1], k, v, table, rows, pre, ex, 0.125)
    with pytest.raises(RuntimeError, match="max_ctx"):
        attention_cpu.extend_attention(q, k, v, table, rows, pre + 1000, ex, 0.125)
    with pytest.raises(RuntimeError, match="req_rows"):
        attention_cpu.extend_attention(q, k, v, table, rows + 10, pre, ex, 0.125)
    bad = table.clone()
    bad[rows[1], 3] = k.shape[0]  # a slot past the pool
    with pytest.raises(RuntimeError, match="slot outside"):
        attention_cpu.extend_attention(q, k, v, bad, rows, pre, ex, 0.125)
    with pytest.raises(RuntimeError, match="float32"):
        attention_cpu.extend_attention(q.double(), k, v, table, rows, pre, ex, 0.125)


def test_new_keys_and_values_are_written_first() -> None:
    """kv=(k_new, v_new, loc): the kernel copies the new rows into their slots before it
    attends (the step's own key included), the same as writing them first in Python."""
    g = torch.Generator().manual_seed(3)
    hq, hkv, d, lens = 9, 3, 64, [5, 130]
    k = torch.randn(400, hkv, d, generator=g)
    v = torch.randn(400, hkv, d, generator=g)
    table = torch.zeros(2, 200, dtype=torch.int32)
    table[0, :5] = torch.arange(10, 15, dtype=torch.int32)
    table[1, :130] = torch.arange(100, 230, dtype=torch.int32)
    rows, seq = torch.tensor([0, 1]), torch.tensor(lens)
    q = torch.randn(2, hq, d, generator=g)
    qkv = torch.randn(2, (hq + 2 * hkv) * d, generator=g)  # new k/v as strided views, as the model has them
    k_new = qkv[:, hq * d:(hq + hkv) * d].view(2, hkv, d)
    v_new = qkv[:, (hq + hkv) * d:].view(2, hkv, d)
    loc = torch.tensor([14, 229])  # each request's last position
    k2, v2 = k.clone(), v.clone()
    out, lse = attention_cpu.decode_attention(q, k2, v2, table, rows, seq, 0.125, kv=(k_new, v_new, loc))
    k[loc], v[loc] = k_new, v_new
    assert torch.equal(k2, k) and torch.equal(v2, v)
    want_out, want_lse = attention_cpu.decode_attention(q, k, v, table, rows, seq, 0.125)
    assert torch.equal(out, want_out) and torch.equal(lse, want_lse)
    with pytest.raises(RuntimeError, match="loc must index"):
        attention_cpu.decode_attention(q, k2, v2, table, rows, seq, 0.125, kv=(k_new, v_new, torch.tensor([0, 400])))
    assert torch.equal(k2, k) and torch.equal(v2, v)  # a refused call writes no row


def test_bad_inputs_raise() -> None:
    q = torch.randn(1, 4, 8)
    k = torch.randn(10, 2, 8)
    table = torch.ones(1, 4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="float32"):
        attention_cpu.decode_attention(q.double(), k, k, table, torch.tensor([0]), torch.tensor([3]), 1.0)
    with pytest.raises(RuntimeError, match="head shapes"):
        attention_cpu.decode_attention(torch.randn(1, 3, 8), k, k, table, torch.tensor([0]), torch.tensor([3]), 1.0)
    with pytest.raises(RuntimeError, match="seq_lens"):  # past the table: refused, not read out of bounds
        attention_cpu.decode_attention(q, k, k, table, torch.tensor([0]), torch.tensor([5]), 1.0)
    with pytest.raises(RuntimeError, match="req_rows"):
        attention_cpu.decode_attention(q, k, k, table, torch.tensor([1]), torch.tensor([3]), 1.0)


def test_env_switch_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CPU_DECODE_ATTENTION", "sdpa")
    assert not attention_cpu.available()


def test_stale_build_lock_is_removed(monkeypatch) -> None:
    # a lock left by a killed build must not make the next start wait forever
    import os
    import time
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    from sgl_kernel import cpu_kernels, jit

    ext = cpu_kernels.EXT
    lock = Path(_get_build_directory(ext.name, False)) / "lock"
    lock.touch()
    old = time.time() - jit._STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    monkeypatch.setattr(ext, "_module", None)
    assert ext.get() is not None
    assert not lock.exists()


def test_fused_capture_stats_equal_the_capture_kernel() -> None:
    # the statistics the decode kernel computes from its own probabilities give the same
    # fingerprint-mode capture as sgl_kernel.capture.decode_capture (which re-reads K)
    from sgl_kernel.capture import decode_capture, fingerprints_from_stats

    g = torch.Generator().manual_seed(7)
    hq, hkv, d, lens = 9, 3, 64, [1, 2, 3, 40, 300, 1500]
    pool = 4000
    k = torch.randn(pool, hkv, d, generator=g) * 2
    v = torch.randn(pool, hkv, d, generator=g)
    table = torch.zeros(len(lens), 2048, dtype=torch.int32)
    perm = torch.randperm(pool - 1, generator=g) + 1
    start = 0
    for r, n in enumerate(lens):
        table[r, :n] = perm[start : start + n].int()
        start += n
    q = torch.randn(len(lens), hq, d, generator=g)
    rows, seq = torch.arange(len(lens)), torch.tensor(lens)
    mask = torch.tensor([0, 1, 0, 10, 0, 700])
    out, lse, hist, masked, entropy = attention_cpu.decode_attention(q, k, v, table, rows, seq, 0.125, mask_prefix=mask)
    ref = decode_capture(q, k, table, rows, seq, scale=0.125, top_k=0, mask_prefix=mask, impl="torch")
    fused = {"head_lse": lse, "hist": hist, "entropy": entropy, "masked_mass": masked,
             "fingerprint": fingerprints_from_stats(torch.cat([hist, masked[:, None], entropy[:, None]], 1), seq)}
    for f, got in fused.items():
        torch.testing.assert_close(got, getattr(ref, f), rtol=1e-4, atol=2e-5, msg=f)
    out2, lse2 = attention_cpu.decode_attention(q, k, v, table, rows, seq, 0.125)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)  # the statistics do not change attention


@pytest.mark.skipif(not attention_cpu.available(), reason="C++ decode attention not built")
def test_per_head_stats_layout_gives_exact_head_entropy():
    """per_head=True: [B, Hq, 18] like attention_triton's stats; each head's entropy is its own
    (what the version-2 fingerprint corrects per head) and the mean over heads equals the
    head-averaged statistics."""
    from sgl_kernel.capture import decode_capture

    g = torch.Generator().manual_seed(3)
    hq, hkv, d, lens = 9, 3, 64, [1, 5, 77, 600]
    k = torch.randn(2500, hkv, d, generator=g) * 2
    v = torch.randn(2500, hkv, d, generator=g)
    table = (torch.randperm(2499, generator=g)[: 4 * 600] + 1).view(4, 600).int()
    q = torch.randn(len(lens), hq, d, generator=g)
    rows, seq, mask = torch.arange(4), torch.tensor(lens), torch.tensor([0, 2, 0, 100])
    _, lse, stats = attention_cpu.decode_attention(q, k, v, table, rows, seq, 0.125, mask_prefix=mask, per_head=True)
    assert stats.shape == (4, hq, 18)
    ref = decode_capture(q, k, table, rows, seq, scale=0.125, top_k=0, mask_prefix=mask, impl="torch")
    torch.testing.assert_close(stats[..., 17], ref.head_entropy, rtol=1e-4, atol=2e-5)
    _, _, hist, masked, entropy = attention_cpu.decode_attention(q, k, v, table, rows, seq, 0.125, mask_prefix=mask)
    mean = stats.mean(1)
    torch.testing.assert_close(mean[:, :16], hist, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean[:, 16], masked, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean[:, 17], entropy, rtol=1e-5, atol=1e-6)
