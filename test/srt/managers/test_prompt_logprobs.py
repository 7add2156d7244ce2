"""Prompt logprobs (logprob_start_len, input_token_logprobs, input_top_logprobs) against
transformers' logits for the same tiny model, through chunked prefill and the radix cache."""
from __future__ import annotations

import pytest
import torch

from sched_utils import make_scheduler
from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
from sglang.srt.sampling.sampling_params import SamplingParams

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps under the old tree in the park"


@pytest.fixture(scope="module")
def setup(tiny_models, smollm_tokenizer):
    from transformers import AutoModelForCausalLM

    path = tiny_models["llama"]
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    sched = make_scheduler(path, smollm_tokenizer, max_total_tokens=4096, chunked_prefill_size=16)
    return sched, ref, smollm_tokenizer.encode(TEXT)


def _run(sched, reqs):
    for r in reqs:
        sched.add_request(r)
    outs = {}
    while sched.has_work():
        for o in sched.step():
            outs.setdefault(o.rid, []).append(o)
    return outs


def _reference(ref, ids):
    with torch.no_grad():
        return torch.log_softmax(ref(torch.tensor([ids])).logits[0].float(), dim=-1)


@pytest.mark.parametrize("start", [0, 5, -1])
def test_prompt_logprobs_match_transformers(setup, start):
    sched, ref, ids = setup
    # a first request puts the prompt in the radix cache: scoring must still compute it
    _run(sched, [TokenizedGenerateReqInput("warm", ids, SamplingParams(max_new_tokens=2, temperature=0), False)])
    outs = _run(sched, [TokenizedGenerateReqInput(f"s{start}", ids, SamplingParams(max_new_tokens=3, temperature=0),
                                                  True, return_logprob=True, top_logprobs_num=3,
                                                  logprob_start_len=start)])[f"s{start}"]
    got = [o.input_token_logprobs for o in outs if o.input_token_logprobs is not None]
    assert len(got) == 1  # sent once
    lps, tops = got[0], [o.input_top_logprobs for o in outs if o.input_top_logprobs is not None][0]
    first = start if start >= 0 else len(ids) - 1
    assert [t for _, t in lps] == ids[first:]
    assert lps[0][0] is None and tops[0] is None  # nothing before it was scored
    expect = _reference(ref, ids)
    for k, (lp, tid) in enumerate(lps[1:]):
        pos = first + k  # position pos scores token pos + 1
        assert lp == pytest.approx(float(expect[pos, tid]), abs=2e-4)
        want = torch.topk(expect[pos], 3)
        assert [t for _, t in tops[k + 1]] == want.indices.tolist()
    # the output logprobs are still there and the prompt's are not repeated on later messages
    assert sum(len(o.token_logprobs or []) for o in outs) == 3


def test_max_new_tokens_zero_scores_the_prompt(setup):
    sched, ref, ids = setup
    outs = _run(sched, [TokenizedGenerateReqInput("z", ids, SamplingParams(max_new_tokens=0), False,
                                                  return_logprob=True, logprob_start_len=0)])["z"]
    final = outs[-1]
    assert final.finished_reason == {"type": "length", "length": 0} and final.new_token_ids == []
    expect = _reference(ref, ids)
    got = [lp for lp, _ in final.input_token_logprobs[1:]]
    want = [float(expect[p, ids[p + 1]]) for p in range(len(ids) - 1)]
    assert got == pytest.approx(want, abs=2e-4)
    assert sched.allocator.available() + sched.tree.evictable_size == sched.allocator.size
