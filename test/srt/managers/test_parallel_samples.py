"""Parallel samples (n > 1) of one prompt share its KV through the radix cache: one sample
is prefilled first, the others find the prompt cached; each sample stays exact."""
from __future__ import annotations

from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
from sglang.srt.sampling.sampling_params import SamplingParams


def _run_group(sched, prompt, params_list, group="g"):
    results = {f"s{j}": {"output_ids": [], "cached": 0, "error": None} for j in range(len(params_list))}
    for j, p in enumerate(params_list):
        sched.add_request(TokenizedGenerateReqInput(f"s{j}", prompt, p, stream=True, group=group))
    for _ in range(1000):
        if not (sched.has_work() or sched.finished_outputs):
            break
        for o in sched.step() if sched.has_work() else sched.step_idle():
            r = results[o.rid]
            r["output_ids"] += o.new_token_ids
            r["cached"] = max(r["cached"], o.cached_tokens)
            r["error"] = r["error"] or o.error
    return results


def test_samples_of_one_prompt_share_its_prefill(tiny_models, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("a long prompt about rivers and trees and the moon " * 4)
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=4096)
    solo = run(sched, [(0, "solo", prompt, greedy(8))])["solo"]["output_ids"]
    assert sched.flush_cache()
    res = _run_group(sched, prompt, [greedy(8) for _ in range(4)])
    cached = sorted(r["cached"] for r in res.values())
    assert cached[0] == 0 and cached[1:] == [len(prompt) - 1] * 3  # one prefill, three cache hits
    assert all(r["output_ids"] == solo for r in res.values())
    assert sched.group_members == {} and sched.groups_cached == set()
    assert_pool_free(sched)


def test_seeded_samples_differ_and_reproduce(tiny_models, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("once upon a time")
    samples = SamplingParams(max_new_tokens=12, temperature=1.5, seed=7, n=4, ignore_eos=True).samples()
    assert [s.seed for s in samples] == [7, 8, 9, 10] and all(s.n == 1 for s in samples)
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=4096)
    a = _run_group(sched, prompt, samples)
    b = _run_group(sched, prompt, SamplingParams(max_new_tokens=12, temperature=1.5, seed=7, n=4,
                                                 ignore_eos=True).samples(), group="h")
    outs = [a[f"s{j}"]["output_ids"] for j in range(4)]
    assert len({tuple(o) for o in outs}) > 1  # the samples differ
    assert outs == [b[f"s{j}"]["output_ids"] for j in range(4)]  # and reproduce
