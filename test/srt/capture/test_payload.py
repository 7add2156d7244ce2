"""A step's capture blocks reach the host in one copy per dtype; a request's rows point into
them: a streaming request sends references into the shared blocks (serialized once per
step), a waiting one copies its own rows out, and both give the same entries."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sglang.srt.capture.entries import build_entries
from sglang.srt.capture.payload import blocks_to_host, own_rows, take_payload
from sglang.srt.capture.wire import Block, Payload, RowRef
from sglang.srt.managers.io_struct import CaptureParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 32  # rows in a block, as in a batch of 32


def _block(dev: str, seed: int) -> Block:
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
    return Block([1, 3], {k: v.to(dev) for k, v in arrays.items()}, moe_layers=[3], snapshot=snap)


def _want(blk: Block) -> dict[str, np.ndarray]:
    return {k: v.float().cpu().numpy() if v.dtype == torch.bfloat16 else v.cpu().numpy()
            for k, v in blk.tensors.items()}


def _ref(blk: Block, row: int, step: int | None, top_k: int) -> RowRef:
    return RowRef(blk, row, -1 if step is None else step, 10 + row, top_k)


@pytest.mark.parametrize("dev", DEVICES)
def test_blocks_to_host_then_waiting_rows_own_their_copies(dev):
    blocks = [_block(dev, 0), _block(dev, 1)]
    want = [_want(b) for b in blocks]
    blocks_to_host(blocks)
    for b, w in zip(blocks, want):
        assert b.on_host and b.tensors == {}  # the device copies are released
        assert b.arrays.keys() == w.keys() - {"cluster_idx"}
        for k in b.arrays:
            assert isinstance(b.arrays[k], np.ndarray)
            np.testing.assert_array_equal(b.arrays[k], w[k])
        assert b.arrays["topk_pos"].dtype == np.int32  # what the wire carries
        assert b.cluster_ids[:3] == [9, -1, 7] and b.cluster_zones[:3] == ["long_range", None, "syntax_floor"]
    shared = [b.arrays["topk_prob"] for b in blocks]
    raw, sk, fp = _ref(blocks[1], 2, 5, 4), _ref(blocks[0], 0, 6, 6), _ref(blocks[0], 1, 7, 0)
    np.testing.assert_array_equal(raw.get("topk_pos"), want[1]["topk_pos"][2, :, :4])  # its own top-k
    assert np.shares_memory(raw.get("topk_prob"), shared[1])  # a view
    own_rows([("raw", raw), ("sketch", sk), ("fingerprint", fp)])
    assert raw.block is not blocks[1] and sk.block is not blocks[0] and raw.row == 0
    np.testing.assert_array_equal(raw.get("topk_pos"), want[1]["topk_pos"][2, :, :4])
    assert raw.block.arrays.keys() == {"topk_pos", "topk_prob", "topk_logit", "lse_ref", "masked_mass", "moe_ids",
                                       "moe_w"}
    assert not np.shares_memory(raw.block.arrays["topk_prob"], shared[1])  # the block can go
    np.testing.assert_array_equal(sk.get("hist"), want[0]["hist"][0])
    np.testing.assert_array_equal(sk.get("moe_w"), want[0]["moe_w"][0])
    np.testing.assert_array_equal(fp.get("fingerprint"), want[0]["fingerprint"][1])
    assert fp.block.arrays.keys() == {"fingerprint", "moe_ids", "moe_w"} and fp.block.cluster_ids == [-1]


@pytest.mark.parametrize("dev", DEVICES)
def test_streaming_and_waiting_payloads_give_the_same_rows_and_entries(dev):
    p = CaptureParams(mode="fingerprint", layers=[1, 3])
    entries, payloads = {}, {}
    for stream in (True, False):
        blk0, blk1 = _block(dev, 0), _block(dev, 1)
        rows = [_ref(blk0, 0, 0, 0), _ref(blk1, 2, 1, 0), _ref(blk1, 1, None, 0)]  # a prompt row: no cluster hint
        if not stream:
            own_rows([(p.mode, r) for r in rows])
        payload = pickle.loads(pickle.dumps(take_payload(p, rows, stream)))
        assert isinstance(payload, Payload)
        assert all(r.block.owned for r in payload.rows) != stream  # a waiting request sends its own copies...
        if not stream:  # ... in one block of [steps, ...] arrays
            assert len({id(r.block) for r in payload.rows}) == 1
        payloads[stream] = payload
        entries[stream] = build_entries(payload, 10)
    want0, want1 = _want(_block(dev, 0)), _want(_block(dev, 1))
    for payload in payloads.values():
        r0, r1, r2 = payload.rows
        assert r1.get("fingerprint").shape == (20,) and r1.get("fingerprint").dtype == np.float32
        np.testing.assert_allclose(r1.get("fingerprint"), want1["fingerprint"][2])
        np.testing.assert_allclose(r2.get("fingerprint"), want1["fingerprint"][1])
        assert [r.decode_step for r in payload.rows] == [0, 1, -1]
        assert [r.query_pos for r in payload.rows] == [10, 12, 11]
        assert r0.block.moe_layers == [3] and r0.get("moe_ids").shape == (1, 2)
    for a, b in zip(*(payloads[s].rows for s in (True, False))):
        for key in ("fingerprint", "moe_ids", "moe_w"):
            np.testing.assert_equal(a.get(key), b.get(key))
    # cluster hints describe generation: decode rows only (a fingerprint request's prompt rows make no entry)
    es = entries[True]
    assert [(e["decode_step"], e["cluster_id"], e["cluster_zone"]) for e in es] == [
        (0, 9, "long_range"), (1, 7, "syntax_floor")]
    assert es[0]["moe_routing"]["3"]["experts"] == want0["moe_ids"][0, 0].tolist()
    assert entries[True] == entries[False]


def test_a_steps_streaming_payloads_serialize_the_shared_block_once():
    # 32 streaming requests of one step point into one block: pickled together (one
    # output message), the block's arrays are written once, not once per request.
    blk = _block("cpu", 0)
    p = CaptureParams(mode="raw", top_k=6, layers=[1, 3])
    payloads = [take_payload(p, [_ref(blk, i, 4, 6)], stream=True) for i in range(N)]
    one = len(pickle.dumps(payloads[:1]))
    assert len(pickle.dumps(payloads)) < one + N * 200  # the per-request part is a few numbers
    raw = pickle.loads(pickle.dumps(payloads))[5].rows[0]
    assert raw.get("topk_pos").shape == (2, 6) and raw.get("topk_pos").dtype == np.int32
    np.testing.assert_allclose(raw.get("topk_prob"), blk.arrays["topk_prob"][5])
    assert raw.decode_step == 4 and "fingerprint" not in build_entries(payloads[5], 10)[0]


def test_rows_keep_their_own_top_k():
    blk = _block("cpu", 2)
    blocks_to_host([blk])
    p = CaptureParams(mode="sketch", top_k=3, layers=[1, 3], mask_prefix=2)
    for stream in (True, False):
        payload = take_payload(p, [RowRef(blk, 4, 0, 20, 3), RowRef(blk, 5, 1, 21, 3)], stream)
        r4, r5 = payload.rows
        assert r5.get("topk_pos").shape == (2, 3) and payload.mask_prefix == 2
        np.testing.assert_array_equal(r5.get("topk_pos"), blk.arrays["topk_pos"][5, :, :3])
        np.testing.assert_array_equal(r4.get("hist"), blk.arrays["hist"][4])
        assert stream or r4.get("fingerprint") is None  # a copy keeps the fields of its mode
        es = build_entries(payload, 10)
        assert [len(e["layer_sketches"]["1"]["top_hubs"]) for e in es] == [3, 3]
        assert all("cluster_id" not in e and "fingerprint" not in e for e in es)
