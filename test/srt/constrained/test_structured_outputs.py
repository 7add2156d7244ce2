"""Structured outputs in the scheduler: every output a grammar finished parses, over many
prompts and seeds, in mixed batches beside unconstrained requests.

A tiny model with random weights is the hard case (it has no idea what JSON is: every
token of structure comes from the mask); the bundled SmolLM2 checks real outputs."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.sampling.sampling_params import SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pet": {"enum": ["cat", "dog", "none"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["name", "age", "pet", "tags"],
    "additionalProperties": False,
}
REGEX = r"(yes|no|maybe), [0-9]{1,3} (apples|pears)\."
EBNF = 'root ::= "The answer is " ("red" | "green" | "blue") "."'
PROMPTS = ["the weather today", "a person", "list of fruit", "JSON please:", "numbers 1 2 3", "hello"]


def _sample(n: int, seed: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=1.0, seed=seed, **kw)


@pytest.fixture(scope="module")
def tiny(tiny_models, smollm_tokenizer):
    # compact JSON: a random model would otherwise happily emit whitespace until max_new_tokens
    return make_scheduler(tiny_models["llama"], smollm_tokenizer, max_total_tokens=8192,
                          constrained_json_disable_any_whitespace=True)


def _text(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def test_random_model_outputs_always_parse(tiny, smollm_tokenizer):
    tok = smollm_tokenizer
    arrivals = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt)
        for seed in range(3):
            arrivals.append((i, f"json{i}.{seed}", ids, _sample(160, seed, json_schema=json.dumps(SCHEMA))))
            arrivals.append((i, f"regex{i}.{seed}", ids, _sample(40, seed, regex=REGEX)))
            arrivals.append((i, f"ebnf{i}.{seed}", ids, _sample(20, seed, ebnf=EBNF)))
            arrivals.append((i, f"any{i}.{seed}", ids, _sample(200, seed, json_schema="$$ANY$$", top_k=4)))
            arrivals.append((i, f"free{i}.{seed}", ids, _sample(12, seed)))
    res = run(tiny, arrivals)
    finished = {"json": 0, "regex": 0, "ebnf": 0, "any": 0}
    for rid, r in res.items():
        kind = re.match(r"[a-z]+", rid).group(0)
        assert r["error"] is None, (rid, r["error"])
        if kind == "free":
            continue
        text = _text(tok, r["output_ids"])
        if r["finish"]["type"] == "length":  # cut short: what exists must still be a prefix
            continue
        finished[kind] += 1
        assert r["output_ids"][-1] in tiny.eos_ids  # a grammar ends on its stop token
        if kind == "json":
            jsonschema.validate(json.loads(text), SCHEMA)
        elif kind == "regex":
            assert re.fullmatch(REGEX, text), text
        elif kind == "ebnf":
            assert re.fullmatch(r"The answer is (red|green|blue)\.", text), text
        else:
            json.loads(text)
    # bounded grammars always finish within their budgets
    assert finished["json"] == finished["regex"] == finished["ebnf"] == 3 * len(PROMPTS), finished
    assert_pool_free(tiny)


def test_mask_touches_only_constrained_rows(tiny, smollm_tokenizer):
    ids = smollm_tokenizer.encode("a river under the moon")
    alone = run(tiny, [(0, "plain", ids, greedy(10))])["plain"]["output_ids"]
    mixed = run(tiny, [(0, "c1", ids, greedy(10, regex="[a-z ]+")), (0, "plain", ids, greedy(10)),
                       (0, "c2", ids, greedy(10, json_schema=json.dumps(SCHEMA)))])
    assert mixed["plain"]["output_ids"] == alone
    assert re.fullmatch("[a-z ]*", _text(smollm_tokenizer, mixed["c1"]["output_ids"]))


def test_bad_grammar_is_a_400_for_that_request_only(tiny, smollm_tokenizer):
    ids = smollm_tokenizer.encode("hello")
    res = run(tiny, [(0, "bad", ids, greedy(5, regex="(unclosed")), (0, "ok", ids, greedy(5)),
                     (0, "badschema", ids, greedy(5, json_schema='{"type": 7}')),
                     (0, "badebnf", ids, greedy(5, ebnf="root ::= undefined_rule"))])
    for rid, field in (("bad", "regex"), ("badschema", "json_schema"), ("badebnf", "ebnf")):
        assert res[rid]["status"] == 400 and res[rid]["error"].startswith(f"sampling_params.{field}:"), res[rid]
        assert "cpp" not in res[rid]["error"]
    assert res["ok"]["error"] is None and len(res["ok"]["output_ids"]) == 5
    assert_pool_free(tiny)


def test_min_new_tokens_yields_to_a_finished_grammar(tiny, smollm_tokenizer):
    ids = smollm_tokenizer.encode("hello")
    r = run(tiny, [(0, "r", ids, _sample(30, 3, regex="ok", min_new_tokens=10))])["r"]
    assert _text(smollm_tokenizer, r["output_ids"]) == "ok" and r["finish"]["type"] == "stop"


def test_abort_while_compiling_and_grammar_backend_none(tiny_models, smollm_tokenizer, tiny):
    ids = smollm_tokenizer.encode("hello")
    huge = json.dumps({"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(300)}})
    tiny.add_request(__import__("sglang.srt.managers.io_struct", fromlist=["x"]).TokenizedGenerateReqInput(
        "slow", ids, greedy(5, json_schema=huge), stream=True))
    tiny.abort("slow")
    outs = tiny.step_idle()
    assert [o.finished_reason["type"] for o in outs if o.rid == "slow"] == ["abort"]
    assert not tiny.has_work()
    off = make_scheduler(tiny_models["llama"], smollm_tokenizer, max_total_tokens=2048, grammar_backend="none")
    r = run(off, [(0, "c", ids, greedy(5, regex="a+"))])["c"]
    assert r["status"] == 400 and "sampling_params.regex" in r["error"] and "--grammar-backend none" in r["error"]


def test_stop_regex(tiny, smollm_tokenizer):
    ids = smollm_tokenizer.encode("hello")
    r = run(tiny, [(0, "r", ids, greedy(30, regex="abc [0-9]+ xyz tail", stop_regex=[r"[0-9]{2} x"]))])["r"]
    assert r["finish"] == {"type": "stop", "matched": r"[0-9]{2} x", "regex": True}
    assert _text(smollm_tokenizer, r["output_ids"]).endswith(" x")


def test_default_model_json_outputs_validate(smollm_tokenizer):
    sched = make_scheduler(None, smollm_tokenizer, max_total_tokens=8192)
    tok = smollm_tokenizer
    arrivals = []
    for i, what in enumerate(["a person", "a cat owner", "my neighbour Bob", "a child"]):
        prompt = tok.apply_chat_template([{"role": "user", "content": f"Describe {what} as JSON."}], tokenize=False,
                                         add_generation_prompt=True)
        for seed in range(2):
            arrivals.append((0, f"p{i}.{seed}", tok.encode(prompt), _sample(120, seed, json_schema=json.dumps(SCHEMA))))
    res = run(sched, arrivals)
    done = 0
    for rid, r in res.items():
        assert r["error"] is None
        if r["finish"]["type"] == "stop":
            jsonschema.validate(json.loads(_text(tok, r["output_ids"])), SCHEMA)
            done += 1
    assert done >= 6, {k: v["finish"] for k, v in res.items()}


def test_reasoning_thinks_freely_then_follows_the_grammar(tiny, smollm_tokenizer):
    """grammar_after: the thinking (forced here by a custom logit processor to
    'hmm, maybe</think>') is unconstrained; the answer after the marker follows the regex."""
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

    think = smollm_tokenizer.encode("hmm, maybe</think>", add_special_tokens=False)
    ns: dict = {"CustomLogitProcessor": CustomLogitProcessor, "THINK": think}
    exec(  # noqa: S102 - a client-style processor class, serialized by value
        "class Think(CustomLogitProcessor):\n"
        "    def __call__(self, logits, custom_param_list=None):\n"
        "        for i, p in enumerate(custom_param_list):\n"
        "            n = len(p['__req__'].output_ids)\n"
        "            if n < len(THINK):\n"
        "                logits[i, :] = -1e9\n"
        "                logits[i, THINK[n]] = 0.0\n"
        "        return logits\n", ns)
    ns["Think"].__module__ = "__main__"
    proc = ns["Think"].to_str()
    ids = smollm_tokenizer.encode("Is it?")
    for rid, after in (("r", "</think>"), ("plain", None)):
        tiny.add_request(TokenizedGenerateReqInput(rid, ids, _sample(40, 1, regex="(yes|no)!"), True,
                                                   custom_logit_processor=proc, grammar_after=after))
    res: dict[str, list[int]] = {"r": [], "plain": []}
    while tiny.has_work():
        for o in tiny.step():
            assert o.error is None, o.error
            res[o.rid] += o.new_token_ids
    text = _text(smollm_tokenizer, res["r"])
    assert text.startswith("hmm, maybe</think>") and re.fullmatch(r"hmm, maybe</think>(yes|no)!", text), text
    plain = _text(smollm_tokenizer, res["plain"])
    assert re.fullmatch(r"(yes|no)!", plain), plain  # without it the grammar wins from the first token
