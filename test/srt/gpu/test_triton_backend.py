"""The engine with --attention-backend triton (interpreted on CPU) against torch_native:
same greedy tokens through extend, chunked extend over a cached prefix and decode, and
the same capture entries (raw top-k and fingerprint)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from capture_utils import capture_scheduler, run_capture
from sched_utils import assert_pool_free, greedy, make_scheduler, run
from sglang.srt.managers.io_struct import CaptureParams

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
N_NEW = 5


def _prompts(tok):
    shared = tok.encode("rivers and trees under the moon, " * 3)
    return [tok.encode("the quick brown fox"), shared + tok.encode(" jumps"), shared + tok.encode(" sleeps all day"),
            tok.encode("a")]


def _arrivals(prompts):
    # staggered: a decode batch is running when later requests are prefilled over the shared prefix
    return [(i, f"r{i}", p, greedy(N_NEW)) for i, p in enumerate(prompts)]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_triton_greedy_equals_torch_native(arch, tiny_models, smollm_tokenizer):
    prompts = _prompts(smollm_tokenizer)
    outs = {}
    for backend in ("torch_native", "triton"):
        sched = make_scheduler(tiny_models[arch], max_total_tokens=1024, chunked_prefill_size=16,
                               attention_backend=backend)
        assert sched.runner.attention_backend_name == backend
        res = run(sched, _arrivals(prompts))
        outs[backend] = {rid: r["output_ids"] for rid, r in res.items()}
        assert all(len(v) == N_NEW for v in outs[backend].values())
        assert any(r["cached"] > 0 for r in res.values()), "no radix hit: the prefix path was not exercised"
        assert_pool_free(sched)
    assert outs["triton"] == outs["torch_native"]


def test_triton_capture_equals_torch_native(tiny_models, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("count the stars and the moons of the far planets")
    reqs = [(0, "raw", prompt, CaptureParams(mode="raw", top_k=6, layers=[1, 3])),
            (0, "fp", prompt[:7], CaptureParams(mode="fingerprint", layers=[2, 3])),
            (1, "heads", prompt, CaptureParams(mode="raw", top_k=4, layers=[3], head_ids=[1, 4],
                                               include_prompt_attention=True, stride=2))]
    res = {}
    for backend in ("torch_native", "triton"):
        # float32 on every device: on a GPU the default bfloat16 rounds the two backends apart
        sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend=backend,
                                  dtype="float32")
        res[backend] = run_capture(sched, reqs, 4)
    a, b = res["torch_native"], res["triton"]
    for rid in ("raw", "fp", "heads"):
        assert a[rid]["error"] is None and b[rid]["error"] is None
        assert a[rid]["output_ids"] == b[rid]["output_ids"]
        assert len(a[rid]["entries"]) == len(b[rid]["entries"]) > 0
        for e1, e2 in zip(a[rid]["entries"], b[rid]["entries"]):
            assert (e1["decode_step"], e1["query_position"]) == (e2["decode_step"], e2["query_position"])
            if "fingerprint" in e1:
                np.testing.assert_allclose(e1["fingerprint"], e2["fingerprint"], atol=1e-4)
                assert e1["manifold"] == e2["manifold"]
            else:
                assert e1["token_positions"] == e2["token_positions"]
                np.testing.assert_allclose(e1["topk_logits"], e2["topk_logits"], atol=1e-4)
                np.testing.assert_allclose(e1["attention_scores"], e2["attention_scores"], atol=1e-4)
    assert any(e.get("prompt") for e in b["heads"]["entries"])


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    import torch

    from sglang.srt.model_executor.model_runner import make_attention_backend

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        make_attention_backend("triton", torch.device("cpu"))


def test_triton_fingerprint_batches_use_the_kernel_statistics(tiny_models, smollm_tokenizer, monkeypatch):
    # A decode batch whose capturing rows are all fingerprint-only takes its statistics
    # from the Triton decode kernel (one call per step finishes every layer and row); the
    # entries equal the two-pass capture of torch_native's gather + SDPA path.
    import sgl_kernel.capture as capture_mod

    prompt = smollm_tokenizer.encode("count the stars and the moons of the far planets")
    reqs = [(0, "fp", prompt, CaptureParams(mode="fingerprint", layers=[1, 3], fingerprint_version=1)),
            (0, "masked", prompt, CaptureParams(mode="fingerprint", layers=[0, 3], mask_prefix=5,
                                                 fingerprint_version=1)),
            (0, "plain", prompt[:6], None)]
    calls = []
    orig = capture_mod.fingerprints_from_stats
    monkeypatch.setattr(capture_mod, "fingerprints_from_stats",
                        lambda stats, n: calls.append(tuple(stats.shape)) or orig(stats, n))
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="triton",
                              dtype="float32")
    got = run_capture(sched, reqs, 4)
    assert calls == [(3, 2, 18)] * 3  # layers 0, 1, 3 for both rows, at decode steps 1..3
    monkeypatch.setenv("SGLANG_CPU_DECODE_ATTENTION", "sdpa")  # reference: capture's own two passes
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="torch_native",
                              dtype="float32")
    want = run_capture(sched, reqs, 4)
    assert len(calls) == 3
    for rid in ("fp", "masked", "plain"):
        assert got[rid]["output_ids"] == want[rid]["output_ids"]
        assert len(got[rid]["entries"]) == len(want[rid]["entries"]) == (0 if rid == "plain" else 4)
        for e1, e2 in zip(got[rid]["entries"], want[rid]["entries"]):
            assert e1["decode_step"] == e2["decode_step"] and e1["manifold"] == e2["manifold"]
            np.testing.assert_allclose(e1["fingerprint"], e2["fingerprint"], atol=1e-5)


def test_triton_sink_aware_fingerprints_from_the_kernel_statistics(tiny_models, smollm_tokenizer, monkeypatch):
    # Version-2 fingerprints (the default) of a fused decode batch come from the Triton
    # kernel's per-head statistics plus each layer's sink terms: equal to the two-pass
    # capture of torch_native's gather + SDPA path, with versions 1 and 2 in one batch.
    import sgl_kernel.capture_common as common

    prompt = smollm_tokenizer.encode("count the stars and the moons of the far planets")
    reqs = [(0, "v2", prompt, CaptureParams(mode="fingerprint", layers=[1, 3], sink_tokens=2)),
            (0, "masked", prompt, CaptureParams(mode="fingerprint", layers=[0, 3], mask_prefix=5)),
            (0, "v1", prompt, CaptureParams(mode="fingerprint", layers=[1, 3], fingerprint_version=1))]
    fused = []
    orig = common.fingerprint_v2
    monkeypatch.setattr(common, "fingerprint_v2",
                        lambda hist, ent, n, sink: fused.append(tuple(ent.shape)) or orig(hist, ent, n, sink))
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="triton",
                              dtype="float32")
    got = run_capture(sched, reqs, 4)
    assert fused.count((3 * 3, sched.cfg.num_heads)) >= 3  # one per decode step: every layer and row
    monkeypatch.setenv("SGLANG_CPU_DECODE_ATTENTION", "sdpa")
    sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, attention_backend="torch_native",
                              dtype="float32")
    want = run_capture(sched, reqs, 4)
    for rid, version in (("v2", 2), ("masked", 2), ("v1", 1)):
        assert got[rid]["output_ids"] == want[rid]["output_ids"]
        assert len(got[rid]["entries"]) == len(want[rid]["entries"]) == 4
        for e1, e2 in zip(got[rid]["entries"], want[rid]["entries"]):
            assert e1["fingerprint_version"] == e2["fingerprint_version"] == version
            assert e1["manifold"] == e2["manifold"]
            np.testing.assert_allclose(e1["fingerprint"], e2["fingerprint"], atol=1e-5)
            assert abs(e1["sink_mass"] - e2["sink_mass"]) < 1e-5
