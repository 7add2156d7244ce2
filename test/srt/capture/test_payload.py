"""A step's capture blocks reach the host in one copy per dtype; a request's records are
rows of them: a streaming request sends references into the shared blocks (serialized once
per step), a waiting one copies its own rows out, and both unpack to the same arrays."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sglang.srt.capture.payload import CaptureBlock, Record, blocks_to_host, own_rows, take_payload
from sglang.srt.capture.wire import RowRefs, pack_rows, unpack
from sglang.srt.managers.io_struct import CaptureParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 32  # rows in a block, as in a batch of 32


def _block(dev: str, seed: int) -> CaptureBlock:
    g = torch.Generator().manual_seed(seed)
    L, K = 2, 6
    arrays = {"topk_pos": torch.randint(0, 10, (N, L, K), generator=g), "topk_prob": torch.rand(N, L, K, generator=g),
              "topk_logit": torch.rand(N, L, K, generator=g), "lse_ref": torch.rand(N, L, generator=g),
              "masked_mass": torch.rand(N, L, generator=g), "hist": torch.rand(N, L, 16, generator=g),
              "entropy": torch.rand(N, L, generator=g), "fingerprint": torch.rand(N, 20, generator=g),
              "cluster_idx": torch.tensor([1, -1, 0] * (N // 3) + [0] * (N % 3)),
              "moe_ids": torch.randint(0, 8, (N, 1, 2), generator=g),
              "moe_w": torch.rand(N, 1, 2, generator=g).to(torch.bfloat16)}
    snap = SimpleNamespace(ids=[7, 9], zones=["syntax_floor", "long_range"])
    return CaptureBlock([1, 3], {k: v.to(dev) for k, v in arrays.items()}, moe_layers=[3], snapshot=snap)


def _want(blk: CaptureBlock) -> dict[str, np.ndarray]:
    return {k: v.float().cpu().numpy() if v.dtype == torch.bfloat16 else v.cpu().numpy() for k, v in blk.arrays.items()}


def _rec(blk: CaptureBlock, row: int, step: int | None, mode: str, top_k: int) -> Record:
    return Record(blk, row, step, 10 + row, top_k, mode)


@pytest.mark.parametrize("dev", DEVICES)
def test_blocks_to_host_then_waiting_records_own_their_rows(dev):
    blocks = [_block(dev, 0), _block(dev, 1)]
    want = [_want(b) for b in blocks]
    blocks_to_host(blocks)
    for b, w in zip(blocks, want):
        hb = b.host
        assert b.arrays == {}  # the device copies are released
        assert hb.arrays.keys() == w.keys() - {"cluster_idx"}
        for k in hb.arrays:
            assert isinstance(hb.arrays[k], np.ndarray)
            np.testing.assert_array_equal(hb.arrays[k], w[k])
        assert hb.arrays["topk_pos"].dtype == np.int32  # what the wire carries
        assert hb.cluster_ids[:3] == [9, -1, 7] and hb.cluster_zones[:3] == ["long_range", None, "syntax_floor"]
    raw, sk, fp = _rec(blocks[1], 2, 5, "raw", 4), _rec(blocks[0], 0, 6, "sketch", 6), _rec(blocks[0], 1, 7, "fingerprint", 0)
    hb, row, _, _, k = raw.ref()
    np.testing.assert_array_equal(hb.row("topk_pos", row, k), want[1]["topk_pos"][2, :, :4])  # its own top-k
    assert np.shares_memory(hb.row("topk_prob", row, k), blocks[1].host.arrays["topk_prob"])  # a view
    own_rows([raw, sk, fp])
    assert raw.block is None and sk.block is None
    hb = raw.ref()[0]
    np.testing.assert_array_equal(hb.row("topk_pos", 0, 4), want[1]["topk_pos"][2, :, :4])
    assert hb.arrays.keys() == {"topk_pos", "topk_prob", "topk_logit", "lse_ref", "masked_mass", "moe_ids", "moe_w"}
    assert not np.shares_memory(hb.arrays["topk_prob"], blocks[1].host.arrays["topk_prob"])  # the block can go
    np.testing.assert_array_equal(sk.ref()[0].row("hist", 0, 6), want[0]["hist"][0])
    np.testing.assert_array_equal(sk.ref()[0].row("moe_w", 0, 6), want[0]["moe_w"][0])
    fhb = fp.ref()[0]
    np.testing.assert_array_equal(fhb.row("fingerprint", 0, 0), want[0]["fingerprint"][1])
    assert fhb.arrays.keys() == {"fingerprint", "moe_ids", "moe_w"} and fhb.cluster_ids == [-1]


@pytest.mark.parametrize("dev", DEVICES)
def test_streaming_and_waiting_payloads_unpack_to_the_same_arrays(dev):
    p = CaptureParams(mode="fingerprint", layers=[1, 3])
    packed = {}
    for stream in (True, False):
        blk0, blk1 = _block(dev, 0), _block(dev, 1)
        recs = [_rec(blk0, 0, 0, "fingerprint", 0), _rec(blk1, 2, 1, "fingerprint", 0),
                _rec(blk1, 1, None, "fingerprint", 0)]  # a prompt row: no cluster hint
        if not stream:
            own_rows(recs)
        payload = take_payload(p, recs, stream)
        assert isinstance(payload, RowRefs) == stream
        packed[stream] = unpack(pickle.loads(pickle.dumps(payload)))
    want1 = _want(_block(dev, 1))
    for out in packed.values():
        assert out["fingerprint"].shape == (3, 20) and out["fingerprint"].dtype == np.float32
        np.testing.assert_allclose(out["fingerprint"][1], want1["fingerprint"][2])
        np.testing.assert_allclose(out["fingerprint"][2], want1["fingerprint"][1])
        assert out["cluster_id"] == [9, 7, None] and out["cluster_zone"] == ["long_range", "syntax_floor", None]
        assert list(out["decode_step"]) == [0, 1, -1] and list(out["query_pos"]) == [10, 12, 11]
        assert out["moe_layers"] == [3] and out["moe_ids"].shape == (3, 1, 2)
    for key in packed[True]:
        np.testing.assert_equal(packed[True][key], packed[False][key])


def test_a_steps_streaming_payloads_serialize_the_shared_block_once():
    # 32 streaming requests of one step point into one block: pickled together (one
    # output message), the block's arrays are written once, not once per request.
    blk = _block("cpu", 0)
    p = CaptureParams(mode="raw", top_k=6, layers=[1, 3])
    payloads = [take_payload(p, [_rec(blk, i, 4, "raw", 6)], stream=True) for i in range(N)]
    one = len(pickle.dumps(payloads[:1]))
    assert len(pickle.dumps(payloads)) < one + N * 200  # the per-request part is a few numbers
    raw = unpack(pickle.loads(pickle.dumps(payloads))[5])
    assert raw["topk_pos"].shape == (1, 2, 6) and raw["topk_pos"].dtype == np.int32
    np.testing.assert_allclose(raw["topk_prob"][0], blk.host.arrays["topk_prob"][5])
    assert list(raw["decode_step"]) == [4] and "fingerprint" not in raw


def test_pack_rows_keeps_each_rows_own_top_k():
    blk = _block("cpu", 2)
    blocks_to_host([blk])
    hb = blk.host
    out = pack_rows("sketch", 3, 2, [(hb, 4, 0, 20, 3), (hb, 5, 1, 21, 3)])
    assert out["topk_pos"].shape == (2, 2, 3) and out["mask_prefix"] == 2
    np.testing.assert_array_equal(out["topk_pos"][1], hb.arrays["topk_pos"][5, :, :3])
    np.testing.assert_array_equal(out["hist"][0], hb.arrays["hist"][4])
    assert "fingerprint" not in out and "cluster_id" not in out
