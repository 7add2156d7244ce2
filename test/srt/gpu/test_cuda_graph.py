"""CUDA-graph decode: batch-size padding and eligibility everywhere; on a GPU, graph
decode gives the same greedy tokens as eager decode, fingerprint-capturing batches replay
the statistics graphs with the same fingerprints, other capturing batches run eagerly, and
padding rows never disturb live requests."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from capture_utils import capture_scheduler, run_capture
from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.layers.attention.triton_backend import MAX_KV_SPLITS, decode_kv_splits
from sglang.srt.managers.io_struct import CaptureParams
from sglang.srt.model_executor.cuda_graph_runner import capture_batch_sizes, padded_batch_size

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs a CUDA GPU and triton")


def test_capture_sizes_and_padding():
    sizes = capture_batch_sizes(64)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 64 and sizes == sorted(set(sizes))
    assert capture_batch_sizes(5) == [1, 2, 4, 5]
    assert capture_batch_sizes(1) == [1]
    assert [padded_batch_size(sizes, b) for b in (1, 3, 8, 9, 17, 64)] == [1, 4, 8, 16, 24, 64]
    with pytest.raises(ValueError):
        padded_batch_size(sizes, 65)


def test_kv_splits_bounded_and_fixed_per_batch_size():
    assert decode_kv_splits(1, 2, 132) == MAX_KV_SPLITS  # batch 1 on a big GPU: as many splits as allowed
    assert decode_kv_splits(64, 8, 132) == 4
    for b in (1, 2, 7, 64, 256):
        s = decode_kv_splits(b, 4, 108)
        assert 4 <= s <= MAX_KV_SPLITS and s & (s - 1) == 0


def test_no_graphs_without_cuda(tiny_models):
    sched = make_scheduler(tiny_models["llama"], max_total_tokens=256, device="cpu")
    assert sched.runner.graph_runner is None


@needs_cuda
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_graph_decode_equals_eager(arch, tiny_models, smollm_tokenizer):
    words = "the quick brown fox jumps over the lazy dog near a river".split()
    prompts = [smollm_tokenizer.encode(" ".join(words[: 2 + i % 9])) for i in range(11)]
    # staggered arrivals: the running batch grows and shrinks through padded sizes (3, 5, 6, 7, 9, ...)
    arrivals = [(i, f"r{i}", p, greedy(8 + i)) for i, p in enumerate(prompts)]
    outs = {}
    for disable in (True, False):
        sched = make_scheduler(tiny_models[arch], max_total_tokens=2048, max_running_requests=16,
                               attention_backend="triton", dtype="float32", disable_cuda_graph=disable)
        gr = sched.runner.graph_runner
        assert (gr is None) == disable
        outs[disable] = {k: v["output_ids"] for k, v in run(sched, arrivals).items()}
        if gr is not None:
            assert gr.replays > 0
        assert_pool_free(sched)
    assert outs[False] == outs[True]


@needs_cuda
def test_capturing_batches_run_eagerly(tiny_models, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("count the stars and the moons")
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="triton",
                              dtype="float32")
    gr = sched.runner.graph_runner
    assert gr is not None
    res = run_capture(sched, [(0, "cap", prompt, CaptureParams(mode="raw", top_k=4, layers=[3], max_steps=2)),
                              (0, "plain", prompt, None)], 6)
    # steps 0..1 capture (eager); the remaining decode steps have no capturing row (graphs)
    assert [e["decode_step"] for e in res["cap"]["entries"]] == [0, 1]
    assert res["cap"]["output_ids"] == res["plain"]["output_ids"]
    assert gr.replays == 4


@needs_cuda
def test_fingerprint_batches_replay_statistics_graphs(tiny_models, smollm_tokenizer):
    # Fingerprint-only capturing batches replay the graphs recorded with the decode
    # kernel's statistics on: same tokens and fingerprints as eager decode.
    words = "the quick brown fox jumps over the lazy dog near a river".split()
    prompts = [smollm_tokenizer.encode(" ".join(words[: 3 + i])) for i in range(5)]
    reqs = [(0, "fp", prompts[4], CaptureParams(mode="fingerprint", layers=[1, 3])),
            (0, "masked", prompts[3], CaptureParams(mode="fingerprint", layers=[0, 3], mask_prefix=3)),
            (1, "plain", prompts[2], None), (2, "fp2", prompts[1], CaptureParams(mode="fingerprint", layers=[1, 3]))]
    res = {}
    for disable in (True, False):
        sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="triton",
                                  dtype="float32", disable_cuda_graph=disable)
        res[disable] = run_capture(sched, reqs, 8)
        gr = sched.runner.graph_runner
        if gr is not None:
            assert gr.stats_replays > 0
        assert_pool_free(sched)
    for rid in ("fp", "masked", "plain", "fp2"):
        a, b = res[True][rid], res[False][rid]
        assert a["output_ids"] == b["output_ids"]
        assert len(a["entries"]) == len(b["entries"]) == (0 if rid == "plain" else 8)
        for e1, e2 in zip(a["entries"], b["entries"]):
            assert e1["decode_step"] == e2["decode_step"] and e1["manifold"] == e2["manifold"]
            np.testing.assert_allclose(e1["fingerprint"], e2["fingerprint"], atol=1e-5)
