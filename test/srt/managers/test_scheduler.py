"""Greedy outputs of the engine equal transformers' greedy generate, for every tiny
architecture, alone, in a staggered running batch, on radix hits and with chunked prefill."""
from __future__ import annotations

import random

import pytest

from model_factory import ARCHS, hf_greedy
from sched_utils import assert_pool_free, greedy, make_scheduler, run

N_NEW = 12


def _prompts(tok, n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    words = "the a cat dog runs over lazy quick brown fox jumps river tree sun moon star code list".split()
    return [tok.encode(" ".join(rng.choice(words) for _ in range(rng.randint(2, 40)))) for _ in range(n)]


@pytest.fixture(scope="module")
def hf_refs(tiny_models, smollm_tokenizer):
    prompts = _prompts(smollm_tokenizer, 8)
    shared = smollm_tokenizer.encode("a long shared system prompt about rivers and trees and the moon " * 3)
    prefixed = [shared + p for p in prompts[:3]]
    long_prompt = smollm_tokenizer.encode("count the stars: " + " star" * 70)
    refs = {}
    for arch, folder in tiny_models.items():
        all_prompts = prompts + prefixed + [long_prompt]
        outs = hf_greedy(folder, all_prompts, N_NEW)
        refs[arch] = {"prompts": prompts, "prefixed": prefixed, "long": long_prompt,
                      "ref": dict(zip(map(tuple, all_prompts), outs))}
    return refs


@pytest.mark.parametrize("prepack", [True, False], ids=["prepacked", "unpacked"])
@pytest.mark.parametrize("arch", ARCHS)
def test_single_and_staggered_batch_match_transformers(arch, prepack, tiny_models, hf_refs):
    data = hf_refs[arch]
    sched = make_scheduler(tiny_models[arch], max_total_tokens=4096, max_running_requests=16,
                           disable_cpu_weight_prepack=not prepack)
    # both CPU matmul paths are covered: packed weights (the default) and the weights as loaded
    assert (sched.runner.model.lm_head.packed_weight is not None) == prepack
    # one request alone
    res = run(sched, [(0, "solo", data["prompts"][0], greedy(N_NEW))])
    assert res["solo"]["output_ids"] == data["ref"][tuple(data["prompts"][0])]
    # 8 requests of different lengths arriving at different steps into one running batch
    arrivals = [(2 * i, f"r{i}", p, greedy(N_NEW)) for i, p in enumerate(data["prompts"])]
    res = run(sched, arrivals)
    for i, p in enumerate(data["prompts"]):
        assert res[f"r{i}"]["output_ids"] == data["ref"][tuple(p)], f"request r{i} diverged"
        assert res[f"r{i}"]["finish"]["type"] == "length"
    assert_pool_free(sched)


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_radix_hit_and_chunked_prefill(arch, tiny_models, hf_refs):
    data = hf_refs[arch]
    sched = make_scheduler(tiny_models[arch], max_total_tokens=4096, chunked_prefill_size=16)
    first, *rest = data["prefixed"]
    res = run(sched, [(0, "a", first, greedy(N_NEW))])
    assert res["a"]["output_ids"] == data["ref"][tuple(first)]
    res = run(sched, [(0, f"b{i}", p, greedy(N_NEW)) for i, p in enumerate(rest)])
    for i, p in enumerate(rest):
        assert res[f"b{i}"]["cached"] > 16, "shared prefix was not reused from the radix cache"
        assert res[f"b{i}"]["output_ids"] == data["ref"][tuple(p)]
    # a long prompt prefilled in 16-token chunks equals the unchunked reference
    res = run(sched, [(0, "long", data["long"], greedy(N_NEW))])
    assert res["long"]["output_ids"] == data["ref"][tuple(data["long"])]
    assert_pool_free(sched)
    # and the same with the radix cache disabled
    plain = make_scheduler(tiny_models[arch], max_total_tokens=4096, disable_radix_cache=True)
    res = run(plain, [(0, "a", first, greedy(N_NEW)), (1, "long", data["long"], greedy(N_NEW))])
    assert res["a"]["output_ids"] == data["ref"][tuple(first)]
    assert res["long"]["output_ids"] == data["ref"][tuple(data["long"])]
    assert plain.allocator.available() == plain.allocator.size


def test_memory_pressure_retracts_without_losing_tokens(tiny_models, hf_refs):
    """A pool too small for all requests at once: they wait or get retracted, outputs stay exact."""
    data = hf_refs["llama"]
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=160, max_running_requests=8)
    arrivals = [(0, f"r{i}", p, greedy(N_NEW)) for i, p in enumerate(data["prompts"])]
    res = run(sched, arrivals)
    for i, p in enumerate(data["prompts"]):
        assert res[f"r{i}"]["output_ids"] == data["ref"][tuple(p)]
    assert_pool_free(sched)


def test_abort_frees_slots_and_bad_prompts_get_clear_errors(tiny_models, smollm_tokenizer):
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=2048, context_length=256)
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput

    sched.add_request(TokenizedGenerateReqInput("x", list(range(10, 60)), greedy(100), stream=True))
    for _ in range(3):
        sched.step()
    assert sched.allocator.available() < sched.allocator.size
    sched.abort("x")
    outs = sched.step_idle()
    assert outs and outs[-1].finished_reason["type"] == "abort"
    assert sched.tree.protected_size == 0 and sched.req_to_token.available() == sched.req_to_token.size
    assert sched.flush_cache() and sched.allocator.available() == sched.allocator.size
    # over-long prompt and out-of-vocab ids: a clear error, nothing allocated
    res = run(sched, [(0, "long", [5] * 300, greedy(4)), (0, "oov", [10 ** 7], greedy(4))])
    assert "context length is 256" in res["long"]["error"]
    assert "input_ids" in res["oov"]["error"]
    assert sched.allocator.available() == sched.allocator.size


def test_stop_conditions(tiny_models, smollm_tokenizer, hf_refs):
    data = hf_refs["llama"]
    p = data["prompts"][1]
    ref = data["ref"][tuple(p)]
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=2048, tokenizer=smollm_tokenizer)
    # stop token id: generation stops at its first occurrence, which is included
    stop_tok = ref[4]
    res = run(sched, [(0, "s", p, greedy(N_NEW, stop_token_ids=[stop_tok]))])
    assert res["s"]["output_ids"] == ref[: ref.index(stop_tok) + 1]
    assert res["s"]["finish"] == {"type": "stop", "matched": stop_tok}
    # stop string: taken from the decoded reference
    text = smollm_tokenizer.decode(ref[3:6])
    if text.strip():
        res = run(sched, [(0, "t", p, greedy(N_NEW, stop=[text.strip()]))])
        assert res["t"]["finish"]["type"] == "stop" and res["t"]["finish"]["matched"] == text.strip()
        assert len(res["t"]["output_ids"]) <= 6
    # eos respected unless ignore_eos
    sched.eos_ids = {ref[2]}
    res = run(sched, [(0, "e", p, greedy(N_NEW, ignore_eos=False))])
    assert res["e"]["output_ids"] == ref[: ref.index(ref[2]) + 1]
