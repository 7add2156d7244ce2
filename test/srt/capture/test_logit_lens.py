"""Logit lens against transformers: the hidden state after each requested layer
(output_hidden_states), through the same final norm and unembedding, for the default
SmolLM2; in a mixed batch, with a stride, and on a radix-cache hit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from capture_utils import capture_scheduler, run_capture
from sglang.srt.managers.io_struct import CaptureParams

N_NEW = 8
L = 30
LAYERS = [0, 7, 15, 22, L - 1]


@pytest.fixture(scope="module")
def sched():
    return capture_scheduler(max_total_tokens=4096)


@pytest.fixture(scope="module")
def hf(sched):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(sched.runner.files.folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompt(smollm_tokenizer):
    return smollm_tokenizer.encode("<|im_start|>user\nName the largest planet and one of its moons.<|im_end|>\n"
                                   "<|im_start|>assistant\n")


def _reference(hf, ids: list[int]) -> list[torch.Tensor]:
    """Per layer l: log-softmax of the lens logits at every position [T, V] (float64)."""
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        hs = out.hidden_states  # embeddings, then after each layer (the last one already normed)
        res = []
        for l in range(L):
            x = hs[l + 1][0]
            if l < L - 1:
                x = hf.model.norm(x)
            res.append(torch.log_softmax(hf.lm_head(x).double(), dim=-1))
        return res


def _check(entries, ref, prompt_len, output_ids, k):
    for e in entries:
        t = prompt_len + e["decode_step"] - 1
        lp = ref[e["layer_id"]][t]
        assert e["token_id"] == output_ids[e["decode_step"]]
        assert e["token_prob"] == pytest.approx(float(lp[e["token_id"]].exp()), abs=1e-4)
        assert e["token_rank"] == int((lp > lp[e["token_id"]] + 1e-6).sum()) or \
            abs(e["token_rank"] - int((lp > lp[e["token_id"]]).sum())) <= 1  # float32 ties
        want = torch.topk(lp, k)
        np.testing.assert_allclose(e["top_probs"], want.values.exp().numpy(), atol=1e-4)
        gap = float(want.values[-2] - want.values[-1]) if k > 1 else 1.0
        if gap > 1e-4:
            assert e["top_token_ids"][:-1] == want.indices.tolist()[:-1]
    if entries:
        last = [e for e in entries if e["layer_id"] == L - 1]
        assert all(e["token_rank"] == 0 for e in last)  # greedy: the last layer's top token was produced


def test_lens_matches_transformers(sched, hf, prompt):
    cap = CaptureParams(mode="fingerprint", layers=[L - 1], logit_lens_layers=LAYERS, logit_lens_top_k=6)
    res = run_capture(sched, [(0, "l", prompt, cap)], N_NEW)["l"]
    assert res["error"] is None
    out = res["output_ids"]
    ref = _reference(hf, prompt + out[:-1])
    assert sorted({(e["decode_step"], e["layer_id"]) for e in res["lens"]}) == \
        sorted((d, l) for d in range(N_NEW) for l in LAYERS)
    _check(res["lens"], ref, len(prompt), out, 6)


def test_lens_in_a_mixed_batch_with_stride_and_cache_hit(sched, hf, prompt, smollm_tokenizer):
    plain = run_capture(sched, [(0, "p", prompt, None)], N_NEW)["p"]["output_ids"]
    other = smollm_tokenizer.encode("Write about the sea.")
    lens = CaptureParams(mode="raw", top_k=4, layers=[3], logit_lens_layers=[5, L - 1], logit_lens_top_k=3,
                         stride=3)
    res = run_capture(sched, [(0, "x", other, CaptureParams(mode="raw", top_k=4, layers=[3])),
                              (0, "l", prompt, lens), (1, "q", prompt, None)], N_NEW)
    assert res["q"]["output_ids"] == plain and res["l"]["output_ids"] == plain  # lens changes nothing
    assert res["x"]["lens"] == [] and res["q"]["lens"] == []
    assert sorted({e["decode_step"] for e in res["l"]["lens"]}) == list(range(0, N_NEW, 3))
    ref = _reference(hf, prompt + plain[:-1])
    _check(res["l"]["lens"], ref, len(prompt), plain, 3)
    assert sched.allocator.available() + sched.tree.evictable_size == sched.allocator.size


def test_lens_of_every_layer_for_several_requests_spans_chunks(sched, hf, prompt, smollm_tokenizer):
    """3 requests x 30 layers = 90 (layer, row) pairs per step: more than one unembedding
    chunk (logit_lens._CHUNK_ROWS); each entry still equals the reference, listed layer by layer."""
    from sglang.srt.capture import logit_lens

    assert 3 * L > logit_lens._CHUNK_ROWS
    every = CaptureParams(mode="fingerprint", layers=[L - 1], logit_lens_layers=list(range(L)), logit_lens_top_k=4)
    other = smollm_tokenizer.encode("Write about the sea.")
    res = run_capture(sched, [(0, "a", other, every), (0, "b", prompt, every), (0, "c", other[:3], every)], 3)
    out = res["b"]["output_ids"]
    lens = res["b"]["lens"]
    assert [(e["decode_step"], e["layer_id"]) for e in lens] == [(d, l) for d in range(3) for l in range(L)]
    _check(lens, _reference(hf, prompt + out[:-1]), len(prompt), out, 4)
    for rid, ids in (("a", other), ("c", other[:3])):
        r = res[rid]
        _check(r["lens"], _reference(hf, ids + r["output_ids"][:-1]), len(ids), r["output_ids"], 4)
