"""A failed forward leaves no trace in the capture of the requests that were batched with
the culprit: each of their steps (and prompt rows) is captured exactly once, with the
values of a clean run."""
from __future__ import annotations

import pytest

from capture_utils import assert_entries_close, capture_scheduler, run_capture
from sglang.srt.managers.io_struct import CaptureParams

N_NEW = 6


def _params(mode: str, prompt: bool) -> CaptureParams:
    return CaptureParams(mode=mode, top_k=4, layers=[1, 3], include_prompt_attention=prompt)


@pytest.mark.parametrize("when", ["extend", "decode", "after_forward"])
def test_capture_of_victims_is_exact_after_a_fault(when, tiny_models, smollm_tokenizer):
    prompts = [smollm_tokenizer.encode(t) for t in ("the quick brown fox jumps", "a river under the moon",
                                                    "one two three four five six", "lazy dog sleeps")]
    reqs = [(0, "raw", prompts[0], _params("raw", True)), (0, "sketch", prompts[1], _params("sketch", False)),
            (0, "fp", prompts[2], _params("fingerprint", False)), (1, "plain", prompts[3], None)]
    clean = run_capture(capture_scheduler(tiny_models["llama"], max_total_tokens=2048), reqs, N_NEW)

    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=2048)
    forward = sched.runner.forward

    def faulty(fb):
        bad = [r for r in sched._inflight if r.rid == "bad"]
        if bad and (when == "extend") == (not fb.is_decode) and len(bad[0].output_ids) >= 2 * (when == "decode"):
            raise RuntimeError("injected fault")
        return forward(fb)

    def faulty_update(reqs, logits):  # after the forward: this step's records already exist
        if any(r.rid == "bad" for r in sched._inflight):
            raise RuntimeError("injected fault after the forward")
        return update(reqs, logits)

    if when == "after_forward":
        update = sched._sample_and_update
        sched._sample_and_update = faulty_update
    else:
        sched.runner.forward = faulty
    got = run_capture(sched, reqs + [(0, "bad", prompts[0], _params("raw", True))], N_NEW)
    assert got["bad"]["error"]
    assert sched.failed_steps_total >= 1
    for rid in ("raw", "sketch", "fp", "plain"):
        assert got[rid]["error"] is None
        assert got[rid]["output_ids"] == clean[rid]["output_ids"]
        steps = [(e.get("decode_step"), e["query_position"], e.get("layer_id")) for e in got[rid]["entries"]]
        assert len(steps) == len(set(steps)), f"{rid}: a row was captured twice"
        assert_entries_close(got[rid]["entries"], clean[rid]["entries"], atol=1e-5, where=rid)
