"""Prepacked linears (sgl_kernel panels, or oneDNN) equal F.linear and are attached to every linear of a model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sglang.srt.layers import cpu_gemm
from sglang.srt.layers.linear import MergedLinear, RowParallelLinear
from sglang.srt.layers.vocab_parallel import ParallelLMHead

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.fixture(params=["panels", "onednn"])
def kind(request, monkeypatch) -> str:
    if request.param == "panels" and not cpu_gemm.kernels():
        pytest.skip("sgl_kernel's GEMM extension does not build here")
    if request.param == "onednn":
        monkeypatch.setattr(cpu_gemm, "kernels", lambda: False)
    return request.param


@pytest.mark.parametrize("rows", [1, 2, 8, 33, 256, 257, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_matches_f_linear(rows: int, bias: bool, kind: str) -> None:
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(200, 96, generator=g)  # 200: a partial last panel
    b = torch.randn(200, generator=g) if bias else None
    packed = cpu_gemm._pack(w)
    assert packed is not None and cpu_gemm.is_panels(packed) == (kind == "panels")
    x = torch.randn(rows, 96, generator=g, dtype=torch.float64).float()
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    got = cpu_gemm.linear(x, w, packed, b)
    assert got.shape == (rows, 200)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    # leading dims are kept (prefill hands [tokens, hidden], some callers [b, s, hidden])
    got3 = cpu_gemm.linear(x.reshape(1, rows, 96), w, packed, b)
    assert got3.shape == (1, rows, 200)
    torch.testing.assert_close(got3[0], got)


def test_prepack_attaches_to_opted_in_layers_only(kind: str) -> None:
    model = torch.nn.ModuleDict({
        "qkv": MergedLinear(96, {"q": 96, "k": 32, "v": 32}),
        "o": RowParallelLinear(96, 96),
        "head": ParallelLMHead(500, 96),
        "plain": torch.nn.Linear(96, 10),  # not opted in: no packed_weight attribute
    })
    for p in model.parameters():
        torch.nn.init.normal_(p)
    assert cpu_gemm.prepack_linear_weights(model, torch.device("cpu"), torch.float16) == 0
    assert model["qkv"].packed_weight is None
    assert cpu_gemm.prepack_linear_weights(model, torch.device("cpu"), torch.float32) == 3
    assert not hasattr(model["plain"], "packed_weight")
    assert all(cpu_gemm.is_panels(model[n].packed_weight) == (kind == "panels") for n in ("qkv", "o", "head"))
    x = torch.randn(5, 96)
    torch.testing.assert_close(model["qkv"](x), F.linear(x, model["qkv"].weight), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(model["o"](x), F.linear(x, model["o"].weight), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(model["head"](x), F.linear(x, model["head"].weight), rtol=1e-5, atol=1e-4)
