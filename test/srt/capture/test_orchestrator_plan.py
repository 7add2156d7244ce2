"""A decode batch whose capturing rows are the previous batch's reuses its capture plan
(head groups, layer lists, index vectors on the device); any change of rows (an arrival,
a finished request, a stride skipping a step, a request's last captured step) builds a
new one; entries are the same as when every step builds its own."""
from __future__ import annotations

import pytest

from capture_utils import assert_entries_close, capture_scheduler, run_capture
from sglang.srt.capture import orchestrator
from sglang.srt.managers.io_struct import CaptureParams


def _mixed(tok):
    words = "the quick brown fox jumps over the lazy dog near a river".split()
    prompts = [tok.encode(" ".join(words[: 3 + i])) for i in range(6)]
    return [(0, "fp", prompts[0], CaptureParams(mode="fingerprint", layers=[1, 3], mask_prefix=2)),
            (0, "raw", prompts[1], CaptureParams(mode="raw", top_k=4, layers=[0, 3])),
            (0, "heads", prompts[2], CaptureParams(mode="sketch", top_k=3, layers=[2], head_ids=[0, 4])),
            (0, "plain", prompts[3], None),
            (3, "late", prompts[4], CaptureParams(mode="raw", top_k=2, layers=[3], window=3)),
            (5, "strided", prompts[5], CaptureParams(mode="fingerprint", layers=[1], stride=2, max_steps=3))]


def _turns(tok):
    """Two requests with strides 2 and 3: at most steps one of them captures, in turn (the
    same batch size and row count, another row), so the rows change at every step."""
    return [(0, "even", tok.encode("the quick brown fox"), CaptureParams(mode="raw", top_k=3, layers=[2], stride=2)),
            (1, "odd", tok.encode("a lazy dog sleeps near"),
             CaptureParams(mode="sketch", top_k=2, layers=[0, 1], stride=3, mask_prefix=1))]


def _run(tiny_models, reqs, n_new: int, reuse: bool, monkeypatch) -> tuple[dict, int]:
    builds = []
    real_build = orchestrator._Plan.build
    monkeypatch.setattr(orchestrator._Plan, "build",
                        staticmethod(lambda rows, fb: builds.append(fb.is_decode) or real_build(rows, fb)))
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, max_running_requests=8)
    if not reuse:  # every step builds its own plan
        hook, prepare = sched.capture_hook, sched.capture_hook.prepare

        def fresh(reqs, fb):
            hook.plan = None
            return prepare(reqs, fb)

        hook.prepare = fresh
    res = run_capture(sched, reqs, n_new)
    monkeypatch.setattr(orchestrator._Plan, "build", staticmethod(real_build))
    return res, builds.count(True)


@pytest.mark.parametrize("scenario", ["mixed", "turns"])
def test_reused_plans_give_the_entries_of_fresh_ones(scenario, tiny_models, smollm_tokenizer, monkeypatch):
    reqs = {"mixed": _mixed, "turns": _turns}[scenario](smollm_tokenizer)
    fresh, n_fresh = _run(tiny_models, reqs, 12, reuse=False, monkeypatch=monkeypatch)
    reused, n_reused = _run(tiny_models, reqs, 12, reuse=True, monkeypatch=monkeypatch)
    for rid, want in fresh.items():
        assert reused[rid]["output_ids"] == want["output_ids"]
        assert_entries_close(reused[rid]["entries"], want["entries"], where=rid)
    if scenario == "mixed":
        # 13 capturing decode steps; the rows change at the arrivals (steps 3 and 5), at each
        # step of the strided request while it captures, and as requests finish
        assert n_fresh == 13 and 4 <= n_reused < n_fresh
    else:  # the rows change at every step: nothing to reuse
        assert n_reused == n_fresh >= 5


def test_steady_batch_builds_one_plan(tiny_models, smollm_tokenizer, monkeypatch):
    reqs = [(0, f"r{i}", smollm_tokenizer.encode("a river runs" + " far" * i),
             CaptureParams(mode="fingerprint", layers=[1, 3])) for i in range(4)]
    res, n = _run(tiny_models, reqs, 10, reuse=True, monkeypatch=monkeypatch)
    assert all(len(r["entries"]) == 10 for r in res.values())
    assert n == 1  # nine decode steps, one plan
