"""--tp 2 over gloo on CPU: the real engine (two scheduler processes in lockstep, ZMQ to
the front end) gives the same greedy tokens as --tp 1, for the dense, biased and MoE
architectures, through prefill, chunked prefill over a cached prefix and batched decode;
capture covers rank 0's heads."""
from __future__ import annotations

import numpy as np
import pytest

import sglang
from capture_utils import capture_scheduler, run_capture
from sched_utils import greedy, make_scheduler, run
from sglang.srt.managers.io_struct import CaptureParams

N_NEW = 6
SP = {"max_new_tokens": N_NEW, "temperature": 0.0, "ignore_eos": True}


def _prompts(tok):
    shared = tok.encode("rivers and trees under the moon, " * 3)
    return [tok.encode("the quick brown fox"), shared + tok.encode(" jumps"), shared + tok.encode(" sleeps"),
            tok.encode("a b c d e f g h i j k l m n o p q r s t u v w x y z")]


def _tp1(folder, prompts):
    sched = make_scheduler(folder, max_total_tokens=1024, chunked_prefill_size=16)
    res = run(sched, [(i, f"r{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)])
    return [res[f"r{i}"]["output_ids"] for i in range(len(prompts))]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3_moe"])
def test_tp2_greedy_equals_tp1(arch, tiny_models, smollm_tokenizer):
    prompts = _prompts(smollm_tokenizer)
    ref = _tp1(tiny_models[arch], prompts)
    with sglang.Engine(tiny_models[arch], tp=2, device="cpu", max_total_tokens=1024, chunked_prefill_size=16,
                       log_level="warning") as eng:
        assert eng.model_info["tp_size"] == 2
        assert eng.model_info["num_attention_heads"] == 3 and eng.model_info["num_attention_heads_total"] == 6
        first = eng.generate(input_ids=prompts[0], sampling_params=SP)  # alone, then a batch on a radix hit
        rest = eng.generate(input_ids=prompts[1:], sampling_params=SP)
        assert [first["output_ids"]] + [r["output_ids"] for r in rest] == ref
        assert rest[1]["meta_info"]["cached_tokens"] > 0
        assert eng.flush_cache()


def test_tp2_capture_covers_rank0_heads(tiny_models, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("count the stars and the moons of the far planets")
    cap = CaptureParams(mode="raw", top_k=5, layers=[1, 3])
    # rank 0 of tp 2 holds global query heads 0..2 of the 6: tp 1 restricted to them is the reference
    ref_cap = CaptureParams(mode="raw", top_k=5, layers=[1, 3], head_ids=[0, 1, 2])
    ref = run_capture(capture_scheduler(tiny_models["llama"], max_total_tokens=1024),
                      [(0, "r", prompt, ref_cap)], 4)["r"]
    with sglang.Engine(tiny_models["llama"], tp=2, device="cpu", max_total_tokens=1024,
                       return_attention_tokens=True, log_level="warning") as eng:
        out = eng.generate(input_ids=prompt, sampling_params={**SP, "max_new_tokens": 4}, capture=cap)
    got = out["meta_info"]["attention_tokens"]
    assert out["output_ids"] == ref["output_ids"]
    assert len(got) == len(ref["entries"]) == 8
    for e1, e2 in zip(ref["entries"], got):
        assert (e1["layer_id"], e1["query_position"]) == (e2["layer_id"], e2["query_position"])
        assert e1["token_positions"] == e2["token_positions"]
        np.testing.assert_allclose(e1["topk_logits"], e2["topk_logits"], atol=1e-4)


def test_tp_not_dividing_heads_is_a_clear_error(tiny_models):
    with pytest.raises(ValueError, match="not divisible"):
        sglang.Engine(tiny_models["llama"], tp=4, device="cpu", max_total_tokens=256, log_level="error")
