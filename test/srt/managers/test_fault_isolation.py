"""One request never takes its neighbours down: poison sampling values, a forward or a
sampler that raises for one request, and admission against the KV pool.

Every victim must finish with exactly the tokens of a clean run (greedy, so any lost,
repeated or corrupted KV would show), the culprit alone gets a 500-class error, and the
pool is entirely free afterwards."""
from __future__ import annotations

from typing import Any

import pytest

from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
from sglang.srt.sampling import sampler as sampler_mod
from sglang.srt.sampling.sampling_params import SamplingParams

N_NEW = 10


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def prompts(smollm_tokenizer):
    texts = ["the quick brown fox", "a river runs under the moon and the stars", "count: one two three",
             "lazy dog", "trees and code and lists of things to do today"]
    return [smollm_tokenizer.encode(t) for t in texts]


@pytest.fixture(scope="module")
def clean(model, prompts):
    sched = make_scheduler(model, max_total_tokens=2048)
    res = run(sched, [(0, f"v{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)])
    return {rid: r["output_ids"] for rid, r in res.items()}


POISON = [
    {"temperature": 1e-40},
    {"temperature": 1e-38},
    {"temperature": 1.0, "repetition_penalty": 1e-300},
    {"temperature": 0.0, "repetition_penalty": 1e-300},
    {"temperature": 100.0, "top_p": 1e-300, "min_p": 1.0},
    {"temperature": 0.7, "frequency_penalty": 2.0, "presence_penalty": -2.0, "top_k": 1 << 40},
    {"temperature": 1e-6, "repetition_penalty": 2.0, "top_p": 5e-324},
]


@pytest.mark.parametrize("poison", POISON, ids=[str(p) for p in POISON])
def test_poison_sampling_values_leave_neighbours_intact(poison, model, prompts, clean):
    sp = SamplingParams(max_new_tokens=N_NEW, ignore_eos=True, seed=3, **poison)
    sp.verify(vocab_size=10**6)  # valid values: the server accepts them
    sched = make_scheduler(model, max_total_tokens=2048)
    arrivals = [(0, f"v{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)]
    arrivals.insert(2, (0, "poison", prompts[0], sp))
    res = run(sched, arrivals)
    assert res["poison"]["error"] is None and len(res["poison"]["output_ids"]) == N_NEW
    for i in range(len(prompts)):
        assert res[f"v{i}"]["error"] is None
        assert res[f"v{i}"]["output_ids"] == clean[f"v{i}"]
    assert_pool_free(sched)


def test_tiny_temperature_is_greedy(model, prompts, clean):
    sched = make_scheduler(model, max_total_tokens=2048)
    res = run(sched, [(0, "t", prompts[1], SamplingParams(max_new_tokens=N_NEW, temperature=1e-40,
                                                             ignore_eos=True))])
    assert res["t"]["output_ids"] == clean["v1"]


def _faulty_forward(sched: Any, culprit: str, when: str, after: int = 0) -> dict[str, int]:
    """Make the runner raise for every forward that runs ``culprit`` (in prefill, or from
    its ``after``-th output token on in decode), like a kernel fault tied to one request."""
    calls = {"raised": 0}
    forward = sched.runner.forward

    def faulty(fb):
        for r in sched._inflight:
            if r.rid == culprit and (when == "extend") == (not fb.is_decode) and len(r.output_ids) >= after:
                calls["raised"] += 1
                raise RuntimeError("injected fault")
        return forward(fb)

    sched.runner.forward = faulty
    return calls


@pytest.mark.parametrize("when,after", [("extend", 0), ("decode", 0), ("decode", 4)])
def test_forward_fault_fails_only_the_culprit(when, after, model, prompts, clean):
    sched = make_scheduler(model, max_total_tokens=2048)
    calls = _faulty_forward(sched, "bad", when, after)
    arrivals = [(0, f"v{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)]
    arrivals.insert(1, (0, "bad", prompts[2], greedy(N_NEW)))
    arrivals.append((3, "late", prompts[3], greedy(N_NEW)))  # arrives while the fault is being isolated
    res = run(sched, arrivals)
    assert calls["raised"] >= 1
    assert res["bad"]["error"] and res["bad"]["status"] == 500
    assert len(res["bad"]["output_ids"]) >= after  # tokens made before the fault were delivered
    for i in range(len(prompts)):
        assert res[f"v{i}"]["error"] is None, res[f"v{i}"]
        assert res[f"v{i}"]["output_ids"] == clean[f"v{i}"], f"v{i} lost or repeated tokens"
    assert res["late"]["output_ids"] == clean["v3"]
    assert sched.failed_steps_total >= 1
    assert_pool_free(sched)


def test_failing_sampler_row_fails_only_its_request(model, prompts, clean, monkeypatch):
    draw = sampler_mod._draw

    def flaky(logits, info, greedy_id):
        if info.seed == 666:
            raise RuntimeError("injected sampler fault")
        return draw(logits, info, greedy_id)

    monkeypatch.setattr(sampler_mod, "_draw", flaky)
    sched = make_scheduler(model, max_total_tokens=2048)
    arrivals = [(0, f"v{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)]
    arrivals.append((0, "bad", prompts[0], SamplingParams(max_new_tokens=N_NEW, temperature=1.0, seed=666)))
    res = run(sched, arrivals)
    assert res["bad"]["status"] == 500 and res["bad"]["output_ids"] == []
    for i in range(len(prompts)):
        assert res[f"v{i}"]["output_ids"] == clean[f"v{i}"]
    assert_pool_free(sched)


def test_batch_dependent_fault_ends_after_bounded_retries(model, prompts):
    """A fault that needs two requests together names no single culprit: the requests are
    retried alone (and then pass), and a fault that persists is bounded by MAX_FAULTS."""
    sched = make_scheduler(model, max_total_tokens=2048)
    forward = sched.runner.forward

    def faulty(fb):
        if fb.batch_size >= 2:
            raise RuntimeError("injected batch fault")
        return forward(fb)

    sched.runner.forward = faulty
    res = run(sched, [(0, f"v{i}", p, greedy(4)) for i, p in enumerate(prompts[:3])])
    for rid, r in res.items():  # every request ends: finished normally or failed with 500
        assert r["finish"] is not None
        assert r["error"] is None or r["status"] == 500
    assert_pool_free(sched)


def test_request_that_can_never_fit_is_refused_at_once(model, prompts, clean):
    sched = make_scheduler(model, max_total_tokens=64)
    big = SamplingParams(max_new_tokens=60, ignore_eos=True, temperature=0.0)
    res = run(sched, [(0, "v0", prompts[0], greedy(N_NEW)), (0, "big", prompts[1], big)])
    assert res["big"]["status"] == 400 and "max_new_tokens" in res["big"]["error"]
    assert res["big"]["output_ids"] == []
    assert res["v0"]["output_ids"] == clean["v0"]
    # exactly the pool is fine: prompt + max_new_tokens - 1 slots (the last token needs none)
    fits = SamplingParams(max_new_tokens=65 - len(prompts[1]), ignore_eos=True, temperature=0.0)
    res = run(sched, [(0, "fits", prompts[1], fits)])
    assert res["fits"]["error"] is None and len(res["fits"]["output_ids"]) == fits.max_new_tokens
    assert_pool_free(sched)


def test_lone_request_beside_a_chunked_prefill_never_crashes(model, smollm_tokenizer):
    """A pool that cannot hold a running request and a partly prefilled one: the partial
    prefill goes back to the queue instead of the step raising."""
    sched = make_scheduler(model, max_total_tokens=96, chunked_prefill_size=16)
    short = smollm_tokenizer.encode("one two")
    long = smollm_tokenizer.encode("the river and the moon " * 8)[:60]
    res = run(sched, [(0, "a", short, greedy(30)), (1, "b", long, greedy(4))])
    assert res["a"]["error"] is None and len(res["a"]["output_ids"]) == 30
    assert res["b"]["error"] is None and len(res["b"]["output_ids"]) == 4
    assert sched.failed_steps_total == 0
    assert_pool_free(sched)


def test_add_request_fault_fails_only_that_request(model, prompts, clean):
    """The process loop applies each message under its own guard: a message that raises
    answers its request with a 500 and the scheduler keeps serving."""
    from sglang.srt.managers.scheduler_process import apply_message

    sched = make_scheduler(model, max_total_tokens=2048)
    orig = sched.add_request

    def add(r):
        if r.rid == "x":
            raise RuntimeError("injected add fault")
        orig(r)

    sched.add_request = add
    apply_message(sched, TokenizedGenerateReqInput("x", prompts[0], greedy(2), stream=True), None)
    outs = sched.step_idle()
    assert [(o.rid, o.error_status) for o in outs] == [("x", 500)]
    res = run(sched, [(0, "v0", prompts[0], greedy(N_NEW))])
    assert res["v0"]["output_ids"] == clean["v0"]


def test_pool_holds_one_full_context_request(model):
    """A pool sized from a small share of memory still fits one request at the model's full
    context (4,453 tokens for an 8,192-token model was seen before); an explicit
    --max-total-tokens is taken as given."""
    sched = make_scheduler(model, mem_fraction_static=1e-9)
    assert sched.allocator.size == sched.cfg.context_length
    assert make_scheduler(model, max_total_tokens=64).allocator.size == 64


def test_server_info_reports_max_total_num_tokens():
    from sglang.srt.entrypoints.server_info import server_info_body
    from sglang.srt.server_args import ServerArgs

    body = server_info_body(ServerArgs(), {"max_total_tokens": 5000}, "m", {}, 0.0, 0)
    assert body["max_total_num_tokens"] == 5000 == body["max_total_tokens"]
