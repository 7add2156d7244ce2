"""min_new_tokens and logit_bias, in the scheduler with a real (tiny) model."""
from __future__ import annotations

import pytest

from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.sampling.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def sched(tiny_models):
    return make_scheduler(tiny_models["llama"], max_total_tokens=4096)


def test_min_new_tokens_holds_back_stop_tokens(sched, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("the quick brown fox")
    free = run(sched, [(0, "free", prompt, greedy(8))])["free"]["output_ids"]
    stop = free[0]  # the greedy first token, made a stop token
    plain = run(sched, [(0, "a", prompt, greedy(8, stop_token_ids=[stop]))])["a"]
    assert plain["output_ids"] == [stop] and plain["finish"]["type"] == "stop"
    held = run(sched, [(0, "b", prompt, greedy(8, stop_token_ids=[stop], min_new_tokens=3))])["b"]
    assert len(held["output_ids"]) >= 3 and stop not in held["output_ids"][:3]
    assert held["finish"]["type"] in ("stop", "length")
    assert_pool_free(sched)


def test_logit_bias_forces_and_bans(sched, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("a river under the moon")
    free = run(sched, [(0, "free", prompt, greedy(6))])["free"]["output_ids"]
    forced = 1234
    res = run(sched, [(0, "force", prompt, greedy(6, logit_bias={forced: 100.0})),
                      (0, "ban", prompt, greedy(6, logit_bias={t: -100.0 for t in set(free)})),
                      (0, "plain", prompt, greedy(6))])
    assert res["force"]["output_ids"] == [forced] * 6
    assert not set(res["ban"]["output_ids"]) & set(free)
    assert res["plain"]["output_ids"] == free  # a biased neighbour changes nothing for the others


def test_validation_names_the_field():
    for d, field in (({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens"),
                     ({"logit_bias": {"5": 101}}, "logit_bias"), ({"logit_bias": {"x": 1}}, "logit_bias")):
        with pytest.raises(ValueError, match=f"sampling_params.{field}"):
            SamplingParams.from_dict(d)
    with pytest.raises(ValueError, match="sampling_params.logit_bias"):
        SamplingParams.from_dict({"logit_bias": {"999999": 1}}).verify(vocab_size=1000)
    assert SamplingParams.from_dict({"logit_bias": {"7": -100}}).logit_bias == {7: -100}
