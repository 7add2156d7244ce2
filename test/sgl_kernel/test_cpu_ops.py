"""sgl_kernel's fused C++ CPU ops against their torch references (and float64 where the
reference's own rounding is the question)."""
from __future__ import annotations

import pytest
import torch

from sgl_kernel import cpu_ops

pytestmark = pytest.mark.skipif(not cpu_ops.available(), reason="no C++ compiler to build the CPU ops")


@pytest.mark.parametrize("rows", [1, 3, 37, 700])
def test_rms_norm_and_residual_add(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    h = 576
    x = torch.randn(rows, h, generator=g) * 3
    res = torch.randn(rows, h, generator=g)
    w = torch.randn(h, generator=g)
    x0, res0 = x.clone(), res.clone()
    torch.testing.assert_close(cpu_ops.rms_norm(x, w, 1e-5), cpu_ops.rms_norm_ref(x, w, 1e-5), rtol=2e-6, atol=2e-6)
    out, s = cpu_ops.add_rms_norm(x, res, w, 1e-5)
    ref_out, ref_s = cpu_ops.add_rms_norm_ref(x, res, w, 1e-5)
    assert torch.equal(s, ref_s)  # the residual sum is the same float add
    torch.testing.assert_close(out, ref_out, rtol=2e-6, atol=2e-6)
    xd = s.double()
    exact = w.double() * xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-6)
    assert torch.equal(x, x0) and torch.equal(res, res0)  # the inputs are not written


def test_rms_norm_strided_rows_and_3d() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 2, 64, generator=g)
    x = base[:, 0]  # rows with a stride of 128
    w = torch.rand(64, generator=g)
    torch.testing.assert_close(cpu_ops.rms_norm(x, w, 1e-6), cpu_ops.rms_norm_ref(x, w, 1e-6), rtol=2e-6, atol=2e-6)
    q = torch.randn(4, 9, 64, generator=g)
    got = cpu_ops.rms_norm(q, w, 1e-6)
    assert got.shape == q.shape
    torch.testing.assert_close(got, cpu_ops.rms_norm_ref(q, w, 1e-6), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("tokens", [1, 5, 300])
def test_rotary_is_bit_identical_to_torch(tokens: int) -> None:
    from sglang.srt.layers.rotary_embedding import RotaryEmbedding

    g = torch.Generator().manual_seed(tokens)
    rope = RotaryEmbedding(64, 2048, 10000.0)
    hq, hk, d = 9, 3, 64
    qkv = torch.randn(tokens, (hq + 2 * hk) * d, generator=g)
    q, k, _ = qkv.split([hq * d, hk * d, hk * d], dim=-1)
    q, k = q.reshape(tokens, hq, d), k.reshape(tokens, hk, d)  # strided rows, as in the model
    pos = torch.randint(0, 2048, (tokens,), generator=g)
    got_q, got_k = cpu_ops.rotary(pos, q, k, rope.cos_cache, rope.sin_cache)
    ref_q, ref_k = cpu_ops.rotary_ref(pos, q, k, rope.cos_cache, rope.sin_cache)
    assert got_q.is_contiguous() and got_k.is_contiguous()
    assert torch.equal(got_q, ref_q) and torch.equal(got_k, ref_k)


def test_rotary_refuses_positions_past_the_cache() -> None:
    cos = torch.ones(8, 4)
    q = torch.randn(1, 2, 4)
    with pytest.raises(RuntimeError, match="position"):
        cpu_ops.rotary(torch.tensor([8]), q, q, cos, cos)


@pytest.mark.parametrize("rows", [1, 7, 200])
def test_silu_and_mul(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 2 * 1536, generator=g) * 4
    x[0, :8] = torch.tensor([0.0, -0.0, 90.0, -90.0, 200.0, -200.0, 1e-30, -1e-30])
    got = cpu_ops.silu_and_mul(x)
    ref = cpu_ops.silu_and_mul_ref(x)
    torch.testing.assert_close(got, ref, rtol=3e-6, atol=1e-6)
    gate, up = x.double().chunk(2, -1)
    torch.testing.assert_close(got.double(), gate * torch.sigmoid(gate) * up, rtol=3e-6, atol=1e-6)
    assert torch.isfinite(got).all()


def test_argmax_rows_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(33, 49152 + 3, generator=g)
    x[1, 100] = x[1, 7] = 50.0  # ties: the first index
    x[2] = -torch.inf
    x[3, 5:] = x[3, 4]  # a flat tail
    x[4, 1000] = torch.nan
    x[5, 9] = torch.inf
    x[6, 49152 + 2] = 99.0  # the maximum in the scalar tail
    got = cpu_ops.argmax_rows(x)
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.argmax(x, dim=-1))
    assert got[1] == 7 and got[4] == 1000
    strided = x[:, :1000]
    assert torch.equal(cpu_ops.argmax_rows(strided), torch.argmax(strided, dim=-1))


def test_bad_inputs_raise() -> None:
    with pytest.raises(RuntimeError, match="float32"):
        cpu_ops.rms_norm(torch.randn(2, 4).double(), torch.ones(4), 1e-6)
    with pytest.raises(RuntimeError, match="hidden size"):
        cpu_ops.rms_norm(torch.randn(2, 4), torch.ones(5), 1e-6)
    with pytest.raises(RuntimeError, match="even"):
        cpu_ops.silu_and_mul(torch.randn(2, 5))


def test_env_switch_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CPU_FUSED_OPS", "0")
    assert not cpu_ops.available()


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 13, 16, 32, 64])
@pytest.mark.parametrize("n,k", [(960, 576), (49152, 576), (576, 1536), (7, 20), (130, 33)])
def test_small_linear_matches_float64(m: int, n: int, k: int) -> None:
    if not cpu_ops.small_gemm_available():
        pytest.skip("the small GEMM extension does not build here")
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    base = torch.randn(m, 2 * k, generator=g)
    x = base[:, :k]  # rows with a stride of 2k, as a slice of a merged projection
    w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    for bias in (None, b):
        got = cpu_ops.small_linear(x, w, bias)
        want = torch.nn.functional.linear(x.double(), w.double(), None if bias is None else bias.double())
        assert got.shape == (m, n) and got.dtype == torch.float32
        # float32 dot products of k terms: error ~ sqrt(k) ulps of the terms' magnitude
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * k ** 0.5)


def test_small_linear_refuses_what_it_does_not_handle() -> None:
    w = torch.randn(8, 16)
    with pytest.raises(RuntimeError, match="1..64 rows"):
        cpu_ops.small_linear(torch.randn(65, 16), w)
    with pytest.raises(RuntimeError, match="columns"):
        cpu_ops.small_linear(torch.randn(1, 15), w)
    with pytest.raises(RuntimeError, match="contiguous"):
        cpu_ops.small_linear(torch.randn(1, 16), torch.randn(16, 8).t())


@pytest.mark.parametrize("m", [1, 5, 8, 13, 32, 64, 300])
@pytest.mark.parametrize("n,k", [(960, 576), (49152, 576), (576, 1536), (7, 20), (130, 33), (48, 4096)])
def test_packed_linear_matches_float64(m: int, n: int, k: int) -> None:
    """Every tile height (8-row tiles and tails of 1..7), a panel tail (n not a multiple of
    48), strided rows, bias or none, and x taller than one m-block (300 rows at k=4096)."""
    if not cpu_ops.small_gemm_available():
        pytest.skip("the small GEMM extension does not build here")
    if m == 300 and n == 49152:
        pytest.skip("a 300-row LM head adds nothing here but time")
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    base = torch.randn(m, 2 * k, generator=g)
    x = base[:, :k]  # rows with a stride of 2k, as a slice of a merged projection
    w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    panels = cpu_ops.pack_panels(w)
    assert panels.shape == (-(-n // 48), k, 48)
    assert torch.equal(panels.reshape(-1, k, 48).transpose(1, 2).reshape(-1, k)[:n], w)  # K-major columns
    assert not panels.reshape(-1, k, 48).transpose(1, 2).reshape(-1, k)[n:].any()  # zero padding
    for bias in (None, b):
        got = cpu_ops.packed_linear(x, panels, n, bias)
        want = torch.nn.functional.linear(x.double(), w.double(), None if bias is None else bias.double())
        assert got.shape == (m, n) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * k ** 0.5)


def test_packed_linear_row_results_do_not_depend_on_the_batch() -> None:
    """A row's output has the same bits alone, in any tile position of a batch of any size,
    or in an m-block after the first: the sum runs over k in order whatever the batch."""
    if not cpu_ops.small_gemm_available():
        pytest.skip("the small GEMM extension does not build here")
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(960, 576, generator=g), torch.randn(960, generator=g)
    panels = cpu_ops.pack_panels(w)
    x = torch.randn(600, 576, generator=g)
    full = cpu_ops.packed_linear(x, panels, 960, b)  # 600 rows: several m-blocks and a tail tile
    for rows in ([0], [5], [0, 1, 2], list(range(9, 26)), list(range(37, 69)), [599, 3, 450]):
        part = cpu_ops.packed_linear(x[rows], panels, 960, b)
        assert torch.equal(part, full[rows]), rows
    # and it is the k-ordered float32 sum from the bias (a reference that checks the claim)
    ref = b.clone()
    for k in range(576):
        ref = torch.addcmul(ref, x[7, k].expand(960), w[:, k])  # one rounding per step, as an FMA's
    torch.testing.assert_close(full[7], ref, rtol=0, atol=1e-5)


def test_packed_linear_refuses_what_it_does_not_handle() -> None:
    panels = cpu_ops.pack_panels(torch.randn(100, 16))  # 3 panels
    with pytest.raises(RuntimeError, match="columns"):
        cpu_ops.packed_linear(torch.randn(2, 15), panels, 100)
    with pytest.raises(RuntimeError, match="does not fit"):
        cpu_ops.packed_linear(torch.randn(2, 16), panels, 200)
    with pytest.raises(RuntimeError, match="does not fit"):
        cpu_ops.packed_linear(torch.randn(2, 16), panels, 96)
    with pytest.raises(RuntimeError, match="pack_panels"):
        cpu_ops.packed_linear(torch.randn(2, 16), torch.randn(100, 16), 100)
    with pytest.raises(RuntimeError, match="bias"):
        cpu_ops.packed_linear(torch.randn(2, 16), panels, 100, torch.randn(99))
    with pytest.raises(RuntimeError, match="float32"):
        cpu_ops.packed_linear(torch.randn(2, 16).double(), panels, 100)
    with pytest.raises(RuntimeError, match="float32"):
        cpu_ops.pack_panels(torch.randn(8, 16).double())
    assert cpu_ops.packed_linear(torch.randn(0, 16), panels, 100).shape == (0, 100)


def test_small_linear_from_threads_and_a_forked_child() -> None:
    """Concurrent callers share the pool (one runs it, the others run serially), and a
    forked child, which has none of the parent's worker threads, starts a pool of its own."""
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor

    g = torch.Generator().manual_seed(7)
    w = torch.randn(4096, 576, generator=g)
    xs = [torch.randn(1 + i % 16, 576, generator=g) for i in range(64)]
    want = [x @ w.t() for x in xs]
    cpu_ops.small_linear(xs[0], w)  # the parent's pool exists before the fork
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda x: cpu_ops.small_linear(x, w), xs))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_small_linear, args=(q, xs[3], w))
    p.start()
    out = q.get(timeout=60)  # before join: the child's put blocks until the pipe is read
    p.join(60)
    assert p.exitcode == 0
    torch.testing.assert_close(torch.tensor(out), want[3], rtol=1e-4, atol=1e-3)


def _child_small_linear(q: "object", x: torch.Tensor, w: torch.Tensor) -> None:
    out = cpu_ops.small_linear(x, w)
    for _ in range(50):  # many jobs: a dead inherited worker would hang one of them
        out = cpu_ops.small_linear(x, w)
    q.put(out.tolist())  # type: ignore[attr-defined]  (plain data: no shared-memory handles)
