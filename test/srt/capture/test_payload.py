"""A step's capture records reach the host in one copy per dtype, and pack the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sglang.srt.capture.payload import pack_records, records_to_host
from sglang.srt.managers.io_struct import CaptureParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _records(dev: str) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    recs = []
    for step in range(3):
        recs.append({"decode_step": step, "query_pos": 10 + step, "layers": [1, 3],
                     "topk_pos": torch.randint(0, 10, (2, 4), generator=g).to(dev),
                     "topk_prob": torch.rand(2, 4, generator=g).to(dev), "topk_logit": torch.rand(2, 4, generator=g).to(dev),
                     "lse_ref": torch.rand(2, generator=g).to(dev), "masked_mass": torch.zeros(2).to(dev),
                     "moe": {3: (torch.tensor([[1, 2]]).to(dev), torch.tensor([[0.7, 0.3]]).to(dev))}})
    return recs


@pytest.mark.parametrize("dev", DEVICES)
def test_records_to_host_moves_everything_and_packs_the_same(dev):
    p = CaptureParams(mode="raw", top_k=4, layers=[1, 3])
    want = pack_records(p, _records(dev), moe_layers=[3])
    recs = _records(dev)
    records_to_host(recs)
    for r in recs:
        assert all(v.device.type == "cpu" for v in r.values() if isinstance(v, torch.Tensor))
        assert all(t.device.type == "cpu" for pair in r["moe"].values() for t in pair)
    got = pack_records(p, recs, moe_layers=[3])
    assert got.keys() == want.keys()
    for k in want:
        if isinstance(want[k], np.ndarray):
            np.testing.assert_array_equal(got[k], want[k])
        else:
            assert got[k] == want[k]
