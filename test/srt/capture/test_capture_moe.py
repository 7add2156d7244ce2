"""MoE routing in capture entries equals the router of transformers' Qwen3-MoE on the same
tokens; raw capture on the tiny MoE matches its dense attention too."""
from __future__ import annotations

import math

import numpy as np
import torch

from capture_utils import capture_scheduler, dense_attention, run_capture
from sglang.srt.managers.io_struct import CaptureParams


def test_moe_routing_and_raw_capture_match_transformers(tiny_models, smollm_tokenizer):
    from transformers import AutoModelForCausalLM

    folder = tiny_models["qwen3_moe"]
    sched = capture_scheduler(folder, max_total_tokens=2048)
    prompt = smollm_tokenizer.encode("Experts route tokens: the quick brown fox jumps over the lazy dog.")
    layers = [0, 1, 3]  # layer 0 is dense (mlp_only_layers), 1 and 3 are sparse
    cap = CaptureParams(mode="raw", top_k=4, layers=layers)
    res = run_capture(sched, [(0, "m", prompt, cap)], 6)["m"]
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    ids = prompt + res["output_ids"][:-1]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_router_logits=True, output_attentions=True)
    moe_layers = sched.cfg.moe_layers
    assert moe_layers == [1, 2, 3]
    router = dict(zip(moe_layers, out.router_logits))
    dense = [a[0].double().numpy() for a in out.attentions]
    seen_moe = 0
    for e in res["entries"]:
        t, l = e["query_position"], e["layer_id"]
        p = dense[l][:, t, : t + 1].mean(0)
        got = [math.exp(x - e["logsumexp_candidates"]) for x in e["topk_logits"]]
        np.testing.assert_allclose(got, p[e["token_positions"]], atol=1e-4)
        if l not in moe_layers:
            assert "moe_routing" not in e
            continue
        probs = torch.softmax(router[l].reshape(len(ids), -1)[t].double(), -1)
        w, ex = torch.topk(probs, 2)
        w = w / w.sum()
        r = e["moe_routing"][str(l)]
        assert r["experts"] == ex.tolist()
        np.testing.assert_allclose(r["weights"], w.numpy(), atol=1e-5)
        seen_moe += 1
    assert seen_moe == 2 * 6
