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


def test_resolved_params_are_trusted_later():
    """The door resolves once; the scheduler's CaptureHook.on_add keeps params resolved for
    the request's prompt as they are and resolves (checks) any others."""
    from types import SimpleNamespace

    from sglang.srt.capture.orchestrator import CaptureHook

    r = CaptureParams(layers=[3, 3], mask_prefix=99).resolved(30, 9, 40)
    assert r.resolved_for == 40 and CaptureParams().resolved_for == -1
    assert r.resolved(30, 9, 40) == r  # idempotent: trusting a resolved copy changes nothing
    hook = CaptureHook.__new__(CaptureHook)  # on_add reads only the model's shape
    hook.num_layers, hook.sched = 30, SimpleNamespace(runner=SimpleNamespace(num_heads=9))
    req = SimpleNamespace(capture=r, prompt_len=40, capture_state=None)
    hook.on_add(req)
    assert req.capture is r and req.capture_state.layers == [3]
    other = SimpleNamespace(capture=CaptureParams(layers=[3, 3], mask_prefix=99), prompt_len=20, capture_state=None)
    hook.on_add(other)
    assert other.capture.layers == [3] and other.capture.mask_prefix == 20 and other.capture.resolved_for == 20
    bad = SimpleNamespace(capture=CaptureParams(layers=[30]), prompt_len=40, capture_state=None)
    with pytest.raises(ValueError, match="attention_capture_layers"):
        hook.on_add(bad)
