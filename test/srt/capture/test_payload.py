"""A step's capture blocks reach the host in one copy per dtype; each record then takes
its own rows (its mode's fields, its own top-k), and packs into [steps, ...] arrays."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sglang.srt.capture.payload import CaptureBlock, blocks_to_host, pack_records, resolve_records
from sglang.srt.managers.io_struct import CaptureParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _block(dev: str, seed: int) -> CaptureBlock:
    g = torch.Generator().manual_seed(seed)
    n, L, K = 3, 2, 6
    arrays = {"topk_pos": torch.randint(0, 10, (n, L, K), generator=g), "topk_prob": torch.rand(n, L, K, generator=g),
              "topk_logit": torch.rand(n, L, K, generator=g), "lse_ref": torch.rand(n, L, generator=g),
              "masked_mass": torch.rand(n, L, generator=g), "hist": torch.rand(n, L, 16, generator=g),
              "entropy": torch.rand(n, L, generator=g), "fingerprint": torch.rand(n, 20, generator=g),
              "cluster_idx": torch.tensor([1, -1, 0]),
              "moe_ids": torch.randint(0, 8, (n, 1, 2), generator=g),
              "moe_w": torch.rand(n, 1, 2, generator=g).to(torch.bfloat16)}
    snap = SimpleNamespace(ids=[7, 9], zones=["syntax_floor", "long_range"])
    return CaptureBlock([1, 3], {k: v.to(dev) for k, v in arrays.items()}, moe_layers=[3], snapshot=snap)


def _rec(blk: CaptureBlock, row: int, step: int | None, mode: str, top_k: int) -> dict:
    return {"decode_step": step, "query_pos": 10 + row, "layers": blk.layers, "_block": blk, "_row": row,
            "_top_k": top_k, "_mode": mode}


@pytest.mark.parametrize("dev", DEVICES)
def test_blocks_to_host_then_each_record_keeps_its_own_rows(dev):
    blocks = [_block(dev, 0), _block(dev, 1)]
    want = [{k: v.float().cpu().numpy() if v.dtype == torch.bfloat16 else v.cpu().numpy()
             for k, v in b.arrays.items()} for b in blocks]
    blocks_to_host(blocks)
    for b, w in zip(blocks, want):
        assert b.on_host and b.arrays.keys() == w.keys()
        for k in w:
            assert isinstance(b.arrays[k], np.ndarray)
            np.testing.assert_array_equal(b.arrays[k], w[k])
    raw, sk, fp, prompt_fp = (_rec(blocks[1], 2, 5, "raw", 4), _rec(blocks[0], 0, 6, "sketch", 6),
                              _rec(blocks[0], 1, 7, "fingerprint", 0), _rec(blocks[1], 0, None, "fingerprint", 0))
    resolve_records([raw, sk, fp, prompt_fp])
    assert not any(k.startswith("_") for r in (raw, sk, fp, prompt_fp) for k in r)
    np.testing.assert_array_equal(raw["topk_pos"], want[1]["topk_pos"][2, :, :4])  # its own top-k
    assert "hist" not in raw and "fingerprint" not in raw
    np.testing.assert_array_equal(sk["hist"], want[0]["hist"][0])
    np.testing.assert_array_equal(fp["fingerprint"], want[0]["fingerprint"][1])
    assert "topk_pos" not in fp and fp["cluster"][0] == -1 and "cluster" not in prompt_fp  # decode steps only
    np.testing.assert_array_equal(sk["moe_w"], want[0]["moe_w"][0])
    assert not np.shares_memory(raw["topk_prob"], blocks[1].arrays["topk_prob"])  # the block can go


def test_pack_records_resolves_on_its_own_and_stacks_steps():
    blk0, blk1 = _block("cpu", 0), _block("cpu", 1)
    p = CaptureParams(mode="fingerprint", layers=[1, 3])
    out = pack_records(p, [_rec(blk0, 0, 0, "fingerprint", 0), _rec(blk1, 2, 1, "fingerprint", 0)])
    assert out["fingerprint"].shape == (2, 20) and out["fingerprint"].dtype == np.float32
    np.testing.assert_allclose(out["fingerprint"][1], blk1.arrays["fingerprint"][2])
    assert out["cluster_id"] == [9, 7] and out["cluster_zone"] == ["long_range", "syntax_floor"]
    assert out["moe_layers"] == [3] and out["moe_ids"].shape == (2, 1, 2)
    raw = pack_records(CaptureParams(mode="raw", top_k=3, layers=[1, 3]), [_rec(blk0, 1, 4, "raw", 3)])
    assert raw["topk_pos"].shape == (1, 2, 3) and raw["topk_pos"].dtype == np.int32
    assert list(raw["decode_step"]) == [4] and "fingerprint" not in raw
