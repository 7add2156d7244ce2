"""CUDA-graph decode: batch-size padding and eligibility everywhere; the capture graph's
static buffers and hand-over (run eagerly, on CPU too) give the same entries as an eager
forward for every capture mode; on a GPU, graph decode gives the same greedy tokens as
eager decode, every capturing batch replays the capture graphs with the same entries, and
padding rows never disturb live requests."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from capture_utils import assert_entries_close, capture_scheduler, run_capture
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


def _mixed_capture_requests(tok):
    """Every capture mode in one running batch, with a non-capturing request among them."""
    words = "the quick brown fox jumps over the lazy dog near a river".split()
    prompts = [tok.encode(" ".join(words[: 3 + i])) for i in range(7)]
    return [(0, "raw", prompts[6], CaptureParams(mode="raw", top_k=4, layers=[1, 3])),
            (0, "sketch", prompts[5], CaptureParams(mode="sketch", top_k=3, layers=[3], mask_prefix=2)),
            (0, "fp", prompts[4], CaptureParams(mode="fingerprint", layers=[0, 3], mask_prefix=3)),
            (0, "plain", prompts[3], None),
            (1, "heads", prompts[2], CaptureParams(mode="raw", top_k=2, layers=[2], head_ids=[1, 3])),
            (1, "window", prompts[1], CaptureParams(mode="raw", top_k=3, layers=[2, 3], window=4, stride=2))]


def _no_sync(fn):
    """fn under torch's sync debugging: any device-to-host synchronisation raises."""
    def run(*args, **kw):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return fn(*args, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return run


def _fingerprint_requests(tok):
    """A fingerprint-only batch (statistics from the decode kernel), with a non-capturing request."""
    words = "the quick brown fox jumps over the lazy dog near a river".split()
    prompts = [tok.encode(" ".join(words[: 3 + i])) for i in range(5)]
    return [(0, "fp", prompts[4], CaptureParams(mode="fingerprint", layers=[1, 3])),
            (0, "masked", prompts[3], CaptureParams(mode="fingerprint", layers=[0, 3], mask_prefix=3)),
            (1, "plain", prompts[2], None), (2, "fp2", prompts[1], CaptureParams(mode="fingerprint", layers=[1, 3]))]


def _graph_vs_eager(tiny_models, tok, record: bool, n_new: int, requests=_mixed_capture_requests
                    ) -> tuple[dict, dict, object]:
    reqs = requests(tok)
    res = {}
    for graphs in (False, True):
        sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, max_running_requests=8,
                                  attention_backend="triton", dtype="float32", disable_cuda_graph=not graphs)
        if graphs and not record:
            sched.runner.init_graph_runner(record=False)
        if graphs and record:
            # everything capture does after the forward is queued without waiting for the
            # device: the sampling sync is the step's only one
            sched.capture_hook.after_forward = _no_sync(sched.capture_hook.after_forward)
        gr = sched.runner.graph_runner
        assert (gr is not None) == graphs
        assert gr is None or gr.capture_graph_error is None, gr.capture_graph_error
        res[graphs] = run_capture(sched, reqs, n_new)
        assert_pool_free(sched)
    return res[False], res[True], gr


def test_capture_graph_buffers_equal_eager_forward(tiny_models, smollm_tokenizer):
    # The capture graph's static buffers, padding and hand-over, run without recording
    # (the Triton kernels interpreted on CPU): every mode's entries are bit for bit those
    # of an eager forward, and every decode step with a capturing row used them.
    n_new = 3
    eager, graph, gr = _graph_vs_eager(tiny_models, smollm_tokenizer, record=False, n_new=n_new)
    for rid, want in eager.items():
        assert graph[rid]["output_ids"] == want["output_ids"]
        steps = sorted({e["decode_step"] for e in want["entries"]})
        assert steps == {"plain": [], "window": [0, 2]}.get(rid, list(range(n_new)))
        assert_entries_close(graph[rid]["entries"], want["entries"], where=rid)
    # both arrival waves decode tokens 1 and 2 together: two batches of 6, padded to 8,
    # replaying the graph that keeps every layer's queries
    assert gr.capture_replays == gr.replays == gr.kind_replays["full"] == 2


@pytest.mark.parametrize("record", [False, pytest.param(True, marks=needs_cuda)], ids=["buffers", "recorded"])
def test_fingerprint_batches_take_the_graph_statistics_buffer(record, tiny_models, smollm_tokenizer):
    # A fingerprint-only batch is finished from the statistics every layer's kernel wrote
    # into the graph's static buffer (with the batch's mask prefixes), replaying the graph
    # without query copies: bit for bit eager when run without recording (CPU), within
    # float32 rounding when recorded (a padded batch may split the keys differently).
    n_new = 8 if record else 3
    eager, graph, gr = _graph_vs_eager(tiny_models, smollm_tokenizer, record=record, n_new=n_new,
                                       requests=_fingerprint_requests)
    for rid, want in eager.items():
        assert graph[rid]["output_ids"] == want["output_ids"]
        assert len(want["entries"]) == (0 if rid == "plain" else n_new)
        assert_entries_close(graph[rid]["entries"], want["entries"], atol=1e-5 if record else 0.0, where=rid)
    assert gr.capture_replays == gr.replays == gr.kind_replays["stats"] > 0


@needs_cuda
def test_every_capturing_batch_replays_the_capture_graph(tiny_models, smollm_tokenizer):
    # Recorded for real: the same entries as eager decode (within float32 rounding, since a
    # padded batch may split the keys differently), no decode step falls back to eager, and
    # capture's work after each forward never synchronises with the device.
    eager, graph, gr = _graph_vs_eager(tiny_models, smollm_tokenizer, record=True, n_new=6)
    for rid, want in eager.items():
        assert graph[rid]["output_ids"] == want["output_ids"]
        assert_entries_close(graph[rid]["entries"], want["entries"], atol=1e-5, where=rid)
    assert gr.capture_replays == gr.replays == gr.kind_replays["full"] > 0


def test_capture_graph_failure_leaves_capture_eager_and_plain_graphs(tiny_models, smollm_tokenizer, monkeypatch):
    # A capture graph that cannot be recorded (here: the "full" graph of size 4 raises)
    # must not stop the server: the capture graphs are dropped, capturing batches decode
    # eagerly with the same entries, and the plain graphs stay.
    from sglang.srt.managers.scheduler_process import model_info

    reqs = _mixed_capture_requests(smollm_tokenizer)
    res = {}
    for graphs in (False, True):
        sched = capture_scheduler(tiny_models["llama"], max_total_tokens=1024, max_running_requests=8,
                                  attention_backend="triton", dtype="float32", disable_cuda_graph=not graphs)
        if graphs:
            sched.runner.init_graph_runner(record=False)
            gr = sched.runner.graph_runner
            recorded = []

            def fake_record(bs: int, kind: str | None) -> None:
                if (bs, kind) == (4, "full"):
                    raise RuntimeError("operation not permitted when stream is capturing")
                recorded.append((bs, kind))
                gr.graphs[(bs, kind)], gr.outputs[(bs, kind)] = object(), torch.empty(0)

            for bs in gr.batch_sizes:
                fake_record(bs, None)
            monkeypatch.setattr(gr, "_record", fake_record)
            gr.record_capture_graphs()
            assert (8, "full") in recorded and not gr.with_capture and gr.io is None
            assert "RuntimeError: operation not permitted" in gr.capture_graph_error
            assert sorted(gr.graphs) == [(bs, None) for bs in gr.batch_sizes]
            info = model_info(sched)
            assert info["cuda_graph"] and not info["cuda_graph_capture"]
            assert "operation not permitted" in info["cuda_graph_capture_error"]
        res[graphs] = run_capture(sched, reqs, 3)
        assert_pool_free(sched)
    assert gr.capture_replays == gr.replays == 0  # every decode batch here had capturing rows
    for rid, want in res[False].items():
        assert res[True][rid]["output_ids"] == want["output_ids"]
        assert_entries_close(res[True][rid]["entries"], want["entries"], where=rid)
