"""Every capture number checked against transformers' dense eager attention
(output_attentions=True) on the same tokens, for the default SmolLM2."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from capture_utils import capture_scheduler, dense_attention, hist16, run_capture
from sglang.srt.managers.io_struct import CaptureParams

N_NEW = 10
L = 30  # SmolLM2 layers
AUTO = [L // 4, L // 2, 3 * L // 4, L - 1]


@pytest.fixture(scope="module")
def sched():
    return capture_scheduler(max_total_tokens=4096)


@pytest.fixture(scope="module")
def hf(sched):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(sched.runner.files.folder, dtype=torch.float32,
                                             attn_implementation="eager")
    return m.eval()


@pytest.fixture(scope="module")
def prompt(smollm_tokenizer):
    text = ("<|im_start|>system\nYou are a careful assistant.<|im_end|>\n<|im_start|>user\n"
            "List three rivers of Europe and one fact about each.<|im_end|>\n<|im_start|>assistant\n")
    return smollm_tokenizer.encode(text)


def _probs(dense, layer, t, heads=None, window=0):
    a = dense[layer][:, t, : t + 1]  # [H, t+1]
    if heads is not None:
        a = a[heads]
    if window:
        lo = max(0, t + 1 - window)
        a = a[:, lo:] / a[:, lo:].sum(-1, keepdims=True)
        a = np.concatenate([np.zeros((a.shape[0], lo)), a], axis=1)
    return a.mean(0), a


def _check_raw(e, dense, k, heads=None, window=0, mask=0, sink=1):
    t = e["query_position"]
    p, _ = _probs(dense, e["layer_id"], t, heads, window)
    elig = p.copy()
    elig[:mask] = -1
    if window:
        elig[: max(0, t + 1 - window)] = -1
    n_elig = int((elig >= 0).sum())
    order = np.argsort(-elig, kind="stable")[: min(k, n_elig)]
    got = e["token_positions"]
    assert len(got) == min(k, n_elig)
    true = [math.exp(x - e["logsumexp_candidates"]) for x in e["topk_logits"]]
    np.testing.assert_allclose(true, p[got], atol=1e-4)
    # the top-k set: equal where the k-th and (k+1)-th values are not tied
    ref_sorted = np.sort(elig)[::-1]
    if len(got) < n_elig and ref_sorted[len(got) - 1] - ref_sorted[len(got)] > 1e-4:
        assert set(got) == set(order.tolist())
    assert all(j >= mask for j in got)
    np.testing.assert_allclose(sum(e["attention_scores"]), 1.0, atol=1e-5)
    np.testing.assert_allclose(e["attention_scores"], p[got] / p[got].sum(), atol=1e-4)
    if mask:
        np.testing.assert_allclose(e["masked_mass"], p[:mask].sum(), atol=1e-4)
    # the attention sink (default: position 0), unless it is private
    assert e["sink_mass"] == pytest.approx(float(p[mask:sink].sum()) if sink > mask else 0.0, abs=1e-4)


@pytest.mark.parametrize("layers,stride", [([L - 1], 1), (AUTO, 2), ([0, 7, 13], 3)])
def test_raw_topk_matches_dense(sched, hf, prompt, layers, stride):
    cap = CaptureParams(mode="raw", top_k=8, layers=layers, stride=stride)
    res = run_capture(sched, [(0, "r", prompt, cap)], N_NEW)["r"]
    dense = dense_attention(hf, prompt + res["output_ids"][:-1])
    steps = sorted({e["decode_step"] for e in res["entries"]})
    assert steps == list(range(0, N_NEW, stride))
    assert len(res["entries"]) == len(steps) * len(layers)
    for e in res["entries"]:
        assert e["query_position"] == len(prompt) + e["decode_step"] - 1
        assert e["layer_id"] in layers
        _check_raw(e, dense, 8)


def test_heads_window_mask_and_prompt_attention(sched, hf, prompt):
    cap = CaptureParams(mode="raw", top_k=5, layers=[3, L - 1], head_ids=[1, 4], window=16, mask_prefix=12,
                        include_prompt_attention=True, stride=4)
    res = run_capture(sched, [(0, "h", prompt, cap)], N_NEW)["h"]
    dense = dense_attention(hf, prompt + res["output_ids"][:-1])
    prompt_entries = [e for e in res["entries"] if e.get("prompt")]
    assert prompt_entries, "include_prompt_attention gave no prompt entries"
    assert {e["query_position"] for e in prompt_entries} == {t for t in range(12, len(prompt) - 1) if t % 4 == 0}
    for e in res["entries"]:
        _check_raw(e, dense, 5, heads=[1, 4], window=16, mask=12)
    # one head: the logits are that head's, lse its own
    cap1 = CaptureParams(mode="raw", top_k=3, layers=[L - 1], head_ids=[2])
    res1 = run_capture(sched, [(0, "one", prompt, cap1)], 3)["one"]
    dense1 = dense_attention(hf, prompt + res1["output_ids"][:-1])
    for e in res1["entries"]:
        _check_raw(e, dense1, 3, heads=[2])


def test_sketch_and_fingerprint_match_dense(sched, hf, prompt):
    sk = CaptureParams(mode="sketch", top_k=5, layers=AUTO)
    fp = CaptureParams(mode="fingerprint", layers=AUTO, fingerprint_version=1)
    res = run_capture(sched, [(0, "s", prompt, sk), (0, "f", prompt, fp)], N_NEW)
    assert res["s"]["output_ids"] == res["f"]["output_ids"]
    dense = dense_attention(hf, prompt + res["s"]["output_ids"][:-1])
    for e in res["s"]["entries"]:
        t = e["query_position"]
        assert e["mode"] == "sketch" and set(e["layer_sketches"]) == {str(l) for l in AUTO}
        for l, s in e["layer_sketches"].items():
            p, ph = _probs(dense, int(l), t)
            np.testing.assert_allclose(s["dist_hist"], hist16(p, t), atol=1e-4)
            assert abs(sum(s["dist_hist"]) - 1) < 1e-4
            ent = float(np.mean([-(x[x > 0] * np.log(x[x > 0])).sum() for x in ph]))
            assert abs(s["entropy"] - ent) < 1e-3
            hubs = s["top_hubs"]
            assert len(hubs) == min(32, t + 1)
            np.testing.assert_allclose([h[1] for h in hubs], p[[h[0] for h in hubs]], atol=1e-4)
            assert abs(s["mass_captured"] - np.sort(p)[::-1][:5].sum()) < 1e-4
    for e in res["f"]["entries"]:
        t = e["query_position"]
        vecs = []
        for l in AUTO:
            p, ph = _probs(dense, l, t)
            h = hist16(p, t)
            ent = float(np.mean([-(x[x > 0] * np.log(x[x > 0])).sum() for x in ph]))
            vecs.append(np.concatenate([[h[:3].sum(), h[3:8].sum(), h[8:].sum(), ent / math.log(t + 1)], h]))
        np.testing.assert_allclose(e["fingerprint"], np.mean(vecs, 0), atol=1e-4)
        assert e["manifold"] in ("syntax_floor", "semantic_bridge", "long_range", "structure_ripple", "diffuse")
        assert e["step"] == e["decode_step"]


def _fingerprint_reference(dense, t: int, mask_prefix: int = 0) -> np.ndarray:
    vecs = []
    for l in AUTO:
        p, ph = _probs(dense, l, t)
        p = p.copy()
        p[:mask_prefix] = 0  # masked keys leave the histogram (their mass is reported apart)
        h = hist16(p, t)
        ent = float(np.mean([-(x[x > 0] * np.log(x[x > 0])).sum() for x in ph]))
        vecs.append(np.concatenate([[h[:3].sum(), h[3:8].sum(), h[8:].sum(), ent / math.log(t + 1)], h]))
    return np.mean(vecs, 0)


def test_fingerprint_batch_from_the_attention_kernel_matches_dense(sched, hf, prompt, monkeypatch):
    # A decode batch of fingerprint-only requests takes its statistics from the C++ decode
    # attention kernel (CPU float32) instead of a second pass over K: same numbers.
    import sgl_kernel.capture as capture_mod
    from sgl_kernel import attention_cpu

    calls = []
    orig = capture_mod.fingerprints_from_stats
    monkeypatch.setattr(capture_mod, "fingerprints_from_stats",
                        lambda stats, n: calls.append(tuple(stats.shape)) or orig(stats, n))
    fp = CaptureParams(mode="fingerprint", layers=AUTO, fingerprint_version=1)
    fp_masked = CaptureParams(mode="fingerprint", layers=AUTO, mask_prefix=7, fingerprint_version=1)
    res = run_capture(sched, [(0, "f", prompt, fp), (0, "m", prompt, fp_masked)], N_NEW)
    dense = dense_attention(hf, prompt + res["f"]["output_ids"][:-1])
    for rid, mp in (("f", 0), ("m", 7)):
        for e in res[rid]["entries"]:
            np.testing.assert_allclose(e["fingerprint"], _fingerprint_reference(dense, e["query_position"], mp),
                                       atol=1e-4)
    if attention_cpu.available() and sched.runner.attn_backend.cpp_decode:
        # one call per decode step with every captured layer and row, none for the prefill
        assert calls == [(len(AUTO), 2, 18)] * (N_NEW - 1)


def test_capture_same_alone_mixed_and_on_radix_hit(sched, prompt, smollm_tokenizer):
    cap = CaptureParams(mode="raw", top_k=6, layers=AUTO)
    alone = run_capture(sched, [(0, "a", prompt, cap)], N_NEW)["a"]
    other = smollm_tokenizer.encode("Write a long story about a dragon who learns to cook.")
    mixed = run_capture(sched, [(0, "x", other, None), (1, "b", prompt, cap), (2, "y", other[:7], CaptureParams(
        mode="fingerprint")), (0, "hit", prompt, cap)], N_NEW)
    for rid in ("b", "hit"):
        assert mixed[rid]["output_ids"] == alone["output_ids"]
        assert len(mixed[rid]["entries"]) == len(alone["entries"])
        for e1, e2 in zip(alone["entries"], mixed[rid]["entries"]):
            assert e1["token_positions"] == e2["token_positions"] and e1["layer_id"] == e2["layer_id"]
            np.testing.assert_allclose(e1["topk_logits"], e2["topk_logits"], atol=1e-4)
            assert abs(e1["logsumexp_candidates"] - e2["logsumexp_candidates"]) < 1e-4
    assert mixed["x"]["entries"] == [] and mixed["x"]["payloads"] == 0
    assert sched.tree.protected_size == 0


def test_constrained_and_parallel_samples_capture_exactly(sched, hf, prompt):
    """Capture composes with structured outputs and n > 1: each sample's entries match
    dense attention over its own tokens (the samples share the prompt's KV)."""
    from sglang.srt.sampling.sampling_params import SamplingParams

    cap = CaptureParams(mode="raw", top_k=6, layers=[3, L - 1])
    regex = SamplingParams(max_new_tokens=N_NEW, temperature=0.0, regex="(Danube|Rhine|Seine), [a-z ]{4,20}")
    samples = SamplingParams(max_new_tokens=N_NEW, temperature=1.0, seed=5, ignore_eos=True, n=2).samples()
    res = run_capture(sched, [(0, "c", prompt, cap, regex), (0, "s0", prompt, cap, samples[0], "g"),
                              (0, "s1", prompt, cap, samples[1], "g")], N_NEW)
    assert res["s0"]["output_ids"] != res["s1"]["output_ids"]
    text = sched.tokenizer.decode(res["c"]["output_ids"], skip_special_tokens=True)
    assert re.fullmatch("(Danube|Rhine|Seine), [a-z ]{4,20}", text), text
    for rid in ("c", "s0", "s1"):
        out = res[rid]["output_ids"]
        dense = dense_attention(hf, prompt + out[:-1])
        assert len(res[rid]["entries"]) == 2 * len(out)
        for e in res[rid]["entries"]:
            _check_raw(e, dense, 6)


def test_per_head_entries_match_each_head(sched, hf, prompt, smollm_tokenizer):
    """attention_capture_heads: one raw entry per (step, layer, head), each exact against
    that head's own dense attention; beside a head-mean request, with a stride and a mask."""
    heads = [0, 4, 8]
    each = CaptureParams(mode="raw", top_k=5, layers=[2, L - 1], heads_each=heads, stride=2, mask_prefix=6)
    mean = CaptureParams(mode="raw", top_k=5, layers=[L - 1], head_ids=[4], mask_prefix=6)
    other = smollm_tokenizer.encode("A short poem about rain.")
    res = run_capture(sched, [(0, "e", prompt, each), (0, "m", prompt, mean), (0, "o", other, None)], N_NEW)
    out = res["e"]["output_ids"]
    assert res["m"]["output_ids"] == out
    dense = dense_attention(hf, prompt + out[:-1])
    got = sorted((e["decode_step"], e["layer_id"], e["head_id"]) for e in res["e"]["entries"])
    assert got == sorted((d, l, h) for d in range(0, N_NEW, 2) for l in (2, L - 1) for h in heads)
    for e in res["e"]["entries"]:
        _check_raw(e, dense, 5, heads=[e["head_id"]], mask=6)
    for e in res["m"]["entries"]:  # the head-mean request's entries carry no head_id
        assert "head_id" not in e
        _check_raw(e, dense, 5, heads=[4], mask=6)
    # the same head through both paths: the same numbers
    by_step = {e["decode_step"]: e for e in res["m"]["entries"]}
    for e in res["e"]["entries"]:
        if e["head_id"] == 4 and e["layer_id"] == L - 1:
            np.testing.assert_allclose(e["topk_logits"], by_step[e["decode_step"]]["topk_logits"][:len(e["topk_logits"])],
                                       atol=1e-4)


def test_sink_mass_in_raw_and_sketch(sched, hf, prompt):
    """sink_mass over the first N positions, exact against dense attention; the default
    sink is position 0, whose share of SmolLM2's attention is large."""
    raw = CaptureParams(mode="raw", top_k=4, layers=[3, L - 1], sink_tokens=4)
    sk = CaptureParams(mode="sketch", top_k=4, layers=[L - 1])
    off = CaptureParams(mode="raw", top_k=4, layers=[L - 1], sink_tokens=0)
    res = run_capture(sched, [(0, "r", prompt, raw), (0, "s", prompt, sk), (0, "o", prompt, off)], N_NEW)
    dense = dense_attention(hf, prompt + res["r"]["output_ids"][:-1])
    for e in res["r"]["entries"]:
        _check_raw(e, dense, 4, sink=4)
    for e in res["o"]["entries"]:
        assert e["sink_mass"] == 0.0
    big = 0
    for e in res["s"]["entries"]:
        p, _ = _probs(dense, L - 1, e["query_position"])
        got = e["layer_sketches"][str(L - 1)]["sink_mass"]
        assert got == pytest.approx(float(p[0]), abs=1e-4)
        big += got > 0.2
    assert big, "SmolLM2's last layer puts much of its attention on position 0"


def test_max_steps_and_invalid_layer(sched, prompt):
    cap = CaptureParams(mode="fingerprint", layers=[L - 1], max_steps=3)
    res = run_capture(sched, [(0, "m", prompt, cap)], N_NEW)["m"]
    assert [e["decode_step"] for e in res["entries"]] == [0, 1, 2]
    bad = run_capture(sched, [(0, "bad", prompt, CaptureParams(layers=[L]))], 2)["bad"]
    assert "attention_capture_layers" in bad["error"]
    assert sched.allocator.available() + sched.tree.evictable_size == sched.allocator.size


def _dense_v2(dense, layer, t, n_sink, mask=0):
    """Version-2 fingerprint of one dense row, from its definition (independent of sgl_kernel)."""
    _, ph = _probs(dense, layer, t)
    keys = np.arange(t + 1)
    rest = keys >= n_sink
    p = ph.mean(0)
    h = hist16(np.where(rest & (keys >= mask), p, 0.0), t)
    h = h / h.sum() if h.sum() >= 1e-4 else np.zeros(16)
    ents = []
    for x in ph:
        r = x[rest].sum()
        qx = x[rest] / r if r >= 1e-4 else np.zeros(0)
        qx = qx[qx > 0]
        ents.append(float(-(qx * np.log(qx)).sum()))
    n_rest = int(rest.sum())
    norm = 0.0 if n_rest <= 1 else min(1.0, float(np.mean(ents)) / math.log(n_rest))
    return np.concatenate([[h[:3].sum(), h[3:8].sum(), h[8:].sum(), norm], h])


@pytest.mark.parametrize("n_sink,mask", [(1, 0), (3, 0), (1, 20), (0, 0)])
def test_fingerprint_v2_matches_dense(sched, hf, prompt, n_sink, mask):
    """The default (version-2) fingerprint against transformers' eager attention, with its
    sink_mass: on the fused decode-kernel path (every step after the first) and the exact
    passes (step 0, from the prefill), next to a version-1 request in the same batch."""
    v2 = CaptureParams(mode="fingerprint", layers=AUTO, sink_tokens=n_sink, mask_prefix=mask)
    v1 = CaptureParams(mode="fingerprint", layers=AUTO, fingerprint_version=1)
    res = run_capture(sched, [(0, "v2", prompt, v2), (0, "v1", prompt, v1)], N_NEW)
    assert res["v2"]["output_ids"] == res["v1"]["output_ids"]
    dense = dense_attention(hf, prompt + res["v2"]["output_ids"][:-1])
    assert len(res["v2"]["entries"]) == N_NEW
    for e, e1 in zip(res["v2"]["entries"], res["v1"]["entries"]):
        t = e["query_position"]
        assert e["fingerprint_version"] == 2 and e1["fingerprint_version"] == 1
        want = np.mean([_dense_v2(dense, l, t, n_sink, mask) for l in AUTO], 0)
        np.testing.assert_allclose(e["fingerprint"], want, atol=2e-4, err_msg=f"step {e['decode_step']}")
        sink = np.mean([_probs(dense, l, t)[0][mask:n_sink].sum() if n_sink > mask else 0.0 for l in AUTO])
        assert e["sink_mass"] == pytest.approx(sink, abs=1e-4)
        assert e1["sink_mass"] == pytest.approx(float(np.mean([_probs(dense, l, t)[0][0] for l in AUTO])), abs=1e-4)
        if n_sink == 0 and mask == 0:
            np.testing.assert_allclose(e["fingerprint"], e1["fingerprint"], atol=2e-5)


def test_fingerprint_v2_chunked_prefill_and_radix_hit(hf, prompt):
    """Version 2 and sink_mass stay exact when the prompt is prefilled in 16-token chunks and
    when a second request finds the prompt in the radix cache, next to a raw request."""
    chunked = capture_scheduler(max_total_tokens=4096, chunked_prefill_size=16)
    v2 = CaptureParams(mode="fingerprint", layers=AUTO, sink_tokens=2)
    raw = CaptureParams(mode="raw", top_k=4, layers=[L - 1])
    first = run_capture(chunked, [(0, "a", prompt, v2)], 4)["a"]
    again = run_capture(chunked, [(0, "b", prompt, v2), (0, "r", prompt, raw)], 4)
    assert chunked.tree.protected_size == 0
    dense = dense_attention(hf, prompt + first["output_ids"][:-1])
    for res in (first, again["b"]):
        assert res["output_ids"] == first["output_ids"] and len(res["entries"]) == 4
        for e in res["entries"]:
            t = e["query_position"]
            want = np.mean([_dense_v2(dense, l, t, 2) for l in AUTO], 0)
            np.testing.assert_allclose(e["fingerprint"], want, atol=2e-4)
            assert e["sink_mass"] == pytest.approx(np.mean([_probs(dense, l, t)[0][:2].sum() for l in AUTO]), abs=1e-4)
    for e in again["r"]["entries"]:
        _check_raw(e, dense, 4)
