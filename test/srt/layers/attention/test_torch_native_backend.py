"""torch_native decode: length buckets and the head-major gather against a float64 reference."""
from __future__ import annotations

import math

import pytest
import torch

from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend, _decode_buckets
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.mem_cache.memory_pool import KVPool, ReqToTokenPool
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode


def test_buckets_sort_by_length_and_bound_padding() -> None:
    lens = [5, 300, 40, 290, 100, 41, 2, 260]
    buckets = _decode_buckets(lens)
    assert sorted(i for b in buckets for i in b) == list(range(len(lens)))
    assert len(buckets) <= 4
    for b in buckets[:-1]:  # every bucket but the last (which takes the rest) is filled to >= 75%
        assert all(lens[i] >= 0.75 * lens[b[0]] for i in b)
    assert _decode_buckets([7] * 5) == [[0, 1, 2, 3, 4]]


def _cpp_available() -> bool:
    from sgl_kernel import attention_cpu

    return attention_cpu.available()


@pytest.mark.parametrize("cpp", [False, True], ids=["gather_sdpa", "cpp_paged"])
@pytest.mark.parametrize("lens", [[1, 3, 200, 57, 120, 9, 199, 64, 2, 150], [33] * 4, [1]])
def test_decode_matches_dense_reference(lens: list[int], cpp: bool) -> None:
    if cpp and not _cpp_available():
        pytest.skip("no C++ compiler for sgl_kernel's CPU decode kernel")
    g = torch.Generator().manual_seed(len(lens))
    hq, hkv, d = 6, 2, 16
    pool = KVPool(sum(lens) + 8, 1, hkv, d, torch.float32, torch.device("cpu"))
    req_pool = ReqToTokenPool(len(lens) + 2, 256, torch.device("cpu"))
    k_buf, v_buf = pool.get_kv(0)
    k_buf[1:].copy_(torch.randn(k_buf[1:].shape, generator=g))
    v_buf[1:].copy_(torch.randn(v_buf[1:].shape, generator=g))
    # scattered slots, as after many steps of interleaved decoding
    perm = (torch.randperm(sum(lens), generator=g) + 1).tolist()
    rows = [req_pool.alloc() for _ in lens]
    slots, start = [], 0
    for r, n in zip(rows, lens):
        s = perm[start : start + n]
        req_pool.req_to_token[r, :n] = torch.tensor(s, dtype=torch.int32)
        slots.append(s)
        start += n
    q = torch.randn(len(lens), hq, d, generator=g)
    backend = TorchNativeAttnBackend(cpp_decode=cpp)
    fb = ForwardBatch(ForwardMode.DECODE, len(lens), torch.zeros(len(lens), dtype=torch.long),
                      torch.tensor(lens) - 1, torch.tensor(rows), torch.tensor(lens), torch.tensor([s[-1] for s in slots]),
                      req_pool, pool, backend, seq_lens_cpu=list(lens))
    layer = RadixAttention(0, hq, hkv, d, 1 / math.sqrt(d))
    backend.init_forward_metadata(fb)
    out, lse = backend.forward_decode(q, layer, fb)
    for i, s in enumerate(slots):
        k = k_buf[s].double().repeat_interleave(hq // hkv, dim=1)  # [n, hq, d]
        v = v_buf[s].double().repeat_interleave(hq // hkv, dim=1)
        p = torch.softmax(torch.einsum("hd,nhd->hn", q[i].double(), k) / math.sqrt(d), dim=-1)
        torch.testing.assert_close(out[i].double(), torch.einsum("hn,nhd->hd", p, v), rtol=1e-5, atol=1e-5)
        if cpp:  # the C++ kernel also hands capture each head's lse
            s_ = torch.einsum("hd,nhd->hn", q[i].double(), k) / math.sqrt(d)
            torch.testing.assert_close(lse[i].double(), torch.logsumexp(s_, dim=-1), rtol=1e-5, atol=1e-5)
