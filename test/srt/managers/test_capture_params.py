"""CaptureParams.resolved: the one check of capture params against the model and the prompt."""
from __future__ import annotations

import pytest

from sglang.srt.managers.io_struct import CaptureParams


def test_resolved_normalizes():
    p = CaptureParams(mode="fingerprint", layers=[5, 3, 5], mask_prefix=500, logit_lens_layers=[2, 1, 2])
    r = p.resolved(30, 9, prompt_len=40)
    assert r.layers == [3, 5] and r.logit_lens_layers == [1, 2] and r.mask_prefix == 40
    assert p.layers == [5, 3, 5] and p.mask_prefix == 500  # a copy: the caller's params are not changed
    assert CaptureParams().resolved(30, 9, 10).layers == [29]  # none given: the last layer


@pytest.mark.parametrize("kw,field", [
    ({"layers": [30]}, "attention_capture_layers"),
    ({"logit_lens_layers": [-1]}, "logit_lens_layers"),
    ({"head_ids": [9]}, "attention_capture_head_ids"),
    ({"heads_each": []}, "attention_capture_heads"),
    ({"top_k": 65}, "top_k_attention"),
    ({"sink_tokens": 65}, "attention_sink_tokens"),
    ({"fingerprint_version": 3}, "attention_fingerprint_version"),
    ({"logit_lens_top_k": 0}, "logit_lens_top_k"),
    ({"adaptive_sampling": True}, "attention_adaptive_sampling"),
    ({"mode": "sketch", "heads_each": [1]}, "attention_capture_heads"),
])
def test_resolved_refuses_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        CaptureParams(**kw).resolved(30, 9, prompt_len=10)
