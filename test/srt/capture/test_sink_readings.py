"""The default (version-2) reading does not track prompt length through the attention sink.

The same question behind neutral prefixes of different lengths: position 0 (the chat
template's <|im_start|>) takes about half of SmolLM2's attention. In version 1 that mass sits
in the bin of its distance, so it walks from mid to long range as the prompt grows; version 2
reports it as sink_mass and describes the rest of the attention, which stays put."""
from __future__ import annotations

import numpy as np
import pytest

from capture_utils import capture_scheduler, run_capture
from sglang.srt.managers.io_struct import CaptureParams, auto_layers

NEUTRAL = "This line is part of a neutral preamble and can be ignored.\n"
QUESTION = "Explain in three sentences why the sky is blue."
N_NEW = 6


@pytest.fixture(scope="module")
def readings(smollm_tokenizer):
    sched = capture_scheduler(max_total_tokens=8192)
    layers = auto_layers(sched.cfg.num_layers)
    out = {}
    for lines in (0, 64):
        msgs = [{"role": "system", "content": NEUTRAL * lines or "Be brief."}, {"role": "user", "content": QUESTION}]
        text = smollm_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = smollm_tokenizer.encode(text, add_special_tokens=False)
        res = run_capture(sched, [(0, f"v{v}", ids, CaptureParams(mode="fingerprint", layers=layers,
                                                                   fingerprint_version=v)) for v in (1, 2)], N_NEW)
        assert res["v1"]["output_ids"] == res["v2"]["output_ids"]
        out[lines] = {v: (np.array([e["fingerprint"] for e in res[f"v{v}"]["entries"]]),
                          np.array([e["sink_mass"] for e in res[f"v{v}"]["entries"]])) for v in (1, 2)}
        out[lines]["prompt_len"] = len(ids)
    return out


def test_sink_mass_moves_with_position_zero_not_into_long_range(readings):
    short, long_ = readings[0], readings[64]
    assert short["prompt_len"] < 64 and long_["prompt_len"] > 512  # position 0 at mid vs long distance
    sink_s, sink_l = short[2][1].mean(), long_[2][1].mean()
    assert sink_s > 0.3 and sink_l > 0.3  # a real sink, in both
    assert abs(sink_s - sink_l) < 0.1
    v1_long = long_[1][0][:, 2].mean() - short[1][0][:, 2].mean()
    v2_long = long_[2][0][:, 2].mean() - short[2][0][:, 2].mean()
    # version 1: the sink's mass walked into the long bins with position 0
    assert v1_long > 0.8 * sink_l
    # version 2: the long-range reading barely moves; the sink stays in sink_mass
    assert abs(v2_long) < 0.1 and abs(v2_long) < 0.25 * v1_long
    # the two versions' sink_mass agree: it is the same quantity whichever fingerprint is read
    np.testing.assert_allclose(long_[1][1], long_[2][1], atol=1e-6)
