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


def _processor_string(token_key: str) -> str:
    """A CustomLogitProcessor subclass defined at runtime (dill serializes it by value, as a
    client's class in __main__ would be), forcing the token its custom_params name."""
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

    ns: dict = {"CustomLogitProcessor": CustomLogitProcessor, "torch": __import__("torch")}
    exec(  # noqa: S102 - the test builds the kind of class a client sends
        "class Force(CustomLogitProcessor):\n"
        "    def __call__(self, logits, custom_param_list=None):\n"
        "        for i, p in enumerate(custom_param_list):\n"
        f"            logits[i, :] = -1e9\n            logits[i, p['{token_key}']] = 0.0\n"
        "        return logits\n", ns)
    ns["Force"].__module__ = "__main__"
    return ns["Force"].to_str()


def test_custom_logit_processor_and_custom_params(tiny_models, smollm_tokenizer):
    sched = make_scheduler(tiny_models["llama"], smollm_tokenizer, max_total_tokens=2048)
    ids = smollm_tokenizer.encode("hello there")
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput

    proc = _processor_string("tok")
    res = {}
    for rid, params, p in (("a", greedy(4, custom_params={"tok": 77}), proc),
                           ("b", greedy(4, custom_params={"tok": 99}), proc),
                           ("plain", greedy(4), None),
                           ("bad", greedy(4, custom_params={"other": 1}), proc),
                           ("garbage", greedy(4), '{"callable": "zz"}')):
        sched.add_request(TokenizedGenerateReqInput(rid, ids, params, True, custom_logit_processor=p))
        res[rid] = {"ids": [], "error": None, "status": None}
    while sched.has_work() or sched.finished_outputs:
        for o in (sched.step() if sched.has_work() else sched.step_idle()):
            res[o.rid]["ids"] += o.new_token_ids
            if o.error:
                res[o.rid]["error"], res[o.rid]["status"] = o.error, o.error_status
    assert res["a"]["ids"] == [77] * 4 and res["b"]["ids"] == [99] * 4
    assert len(res["plain"]["ids"]) == 4 and res["plain"]["error"] is None
    # a processor that raises (KeyError) fails its own request with 400, naming the field
    assert res["bad"]["status"] == 400 and res["bad"]["error"].startswith("custom_logit_processor: it raised KeyError")
    assert res["garbage"]["status"] == 400 and res["garbage"]["error"].startswith("custom_logit_processor: cannot load")
    assert_pool_free(sched)
