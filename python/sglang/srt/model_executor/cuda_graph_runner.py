"""CUDA graphs for decode: one recorded forward per batch size, replayed with padding.

A decode step of a small model on a fast GPU is mostly kernel-launch overhead (hundreds
of small kernels); replaying a recorded graph launches them all at once. A graph is
recorded for each size in ``capture_batch_sizes``; a batch of B requests runs the graph
of the smallest recorded size >= B, with padding rows that read and write only the pool's
padding slot 0 through a req_to_token row of zeros that no request owns.

Batches where no request captures attention are replayed (``can_run``). When the server
allows capture, a second graph per size is recorded with the decode kernel's capture
statistics on (``_StatsCapture``): a batch whose capturing rows are all fingerprint-only
(all heads, no window) replays it, and the fingerprints are finished from its fixed-shape
statistics buffers. Other capturing batches (raw, sketch, head subsets, windows) need
per-batch Python work between layers and run eagerly; ``--disable-cuda-graph`` is never
needed for capture.
Models whose forward needs the host (the MoE expert loop reads expert counts) and the
torch_native backend (its metadata has data-dependent shapes) always run eagerly.
"""
from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

import torch

from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

if TYPE_CHECKING:
    from sglang.srt.model_executor.model_runner import ModelRunner

logger = logging.getLogger(__name__)


def capture_batch_sizes(max_running_requests: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to the largest running batch (which is always included)."""
    sizes = [1, 2, 4, 8] + list(range(16, max_running_requests + 1, 8))
    sizes = sorted({s for s in sizes if s <= max_running_requests} | {max_running_requests})
    return sizes


def padded_batch_size(sizes: list[int], bs: int) -> int:
    """The smallest recorded size >= bs (sizes sorted ascending; bs <= sizes[-1])."""
    if not 0 < bs <= sizes[-1]:
        raise ValueError(f"batch size {bs} is outside 1..{sizes[-1]}")
    return sizes[bisect.bisect_left(sizes, bs)]


def graph_ineligibility(runner: "ModelRunner") -> str | None:
    """Why this runner cannot use CUDA graphs, or None when it can."""
    from sglang.srt.layers.moe import SparseMoE

    if runner.args.disable_cuda_graph:
        return "--disable-cuda-graph"
    if runner.device.type != "cuda":
        return f"device is {runner.device.type}"
    if runner.attention_backend_name != "triton":
        return f"attention backend {runner.attention_backend_name} (graphs need triton)"
    if any(isinstance(m, SparseMoE) for m in runner.model.modules()):
        return "MoE expert loop reads expert counts on the host"
    return None


class _StatsCapture:
    """Stands in for a CaptureBatch while a statistics graph is recorded: every layer's
    decode kernel writes its statistics into one static buffer, with each row's
    mask_prefix read from another (both filled on replay)."""

    def __init__(self, mask_prefix: torch.Tensor, stats: torch.Tensor) -> None:
        self.mask_prefix, self.stats = mask_prefix, stats
        self.fused_stats: dict[int, torch.Tensor] = {}

    def fused_mask_prefix(self, layer_id: int) -> torch.Tensor:
        return self.mask_prefix

    def stats_buffer(self, layer_id: int, batch_size: int, num_heads: int) -> torch.Tensor:
        return self.stats[layer_id, :batch_size]

    def on_layer(self, *args: object) -> None:
        pass


class CudaGraphRunner:
    def __init__(self, runner: "ModelRunner", batch_sizes: list[int], pad_row: int, with_stats: bool = False) -> None:
        self.runner = runner
        self.batch_sizes = sorted(batch_sizes)
        self.max_bs = self.batch_sizes[-1]
        self.pad_row = pad_row
        dev = runner.device
        n = self.max_bs
        # Static inputs: every graph reads slices of these; replay copies the batch in.
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.req_pool_indices = torch.full((n,), pad_row, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(n, dtype=torch.long, device=dev)
        self.out_cache_loc = torch.zeros(n, dtype=torch.long, device=dev)
        self.graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, bool], torch.Tensor] = {}
        self.pool = None
        self.replays = 0  # batches served by a graph (tests and benchmarks read it)
        self.stats_replays = 0  # of which fingerprint-capturing batches
        self.stream = torch.cuda.Stream(device=dev)
        self.with_stats = with_stats
        if with_stats:
            from sgl_kernel.capture_common import STATS_DIM

            cfg = runner.model_config
            self.mask_prefix = torch.zeros(n, dtype=torch.long, device=dev)
            self.stats = torch.zeros(cfg.num_layers, n, runner.num_heads, STATS_DIM, dtype=torch.float32, device=dev)
        # Largest first: the smaller graphs then fit in the memory pool the first one made.
        for bs in reversed(self.batch_sizes):
            self._record(bs, False)
            if with_stats:
                self._record(bs, True)
        torch.cuda.synchronize(dev)
        logger.info("CUDA graphs recorded for decode batch sizes %s", self.batch_sizes)

    def _batch(self, bs: int) -> ForwardBatch:
        r = self.runner
        return ForwardBatch(
            mode=ForwardMode.DECODE, batch_size=bs, input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            req_pool_indices=self.req_pool_indices[:bs], seq_lens=self.seq_lens[:bs],
            out_cache_loc=self.out_cache_loc[:bs], req_to_token_pool=r.req_to_token_pool, kv_pool=r.kv_pool,
            attn_backend=r.attn_backend, seq_lens_cpu=[1] * bs,
        )

    def _record(self, bs: int, stats: bool) -> None:
        fb = self._batch(bs)
        if stats:
            fb.capture = _StatsCapture(self.mask_prefix[:bs], self.stats)
        model = self.runner.model
        self.stream.wait_stream(torch.cuda.current_stream(self.runner.device))
        with torch.cuda.stream(self.stream):
            for _ in range(2):  # compiles the Triton kernels and settles lazy allocations outside the graph
                model(fb.input_ids, fb.positions, fb)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out = model(fb.input_ids, fb.positions, fb)
        self.pool = graph.pool()
        self.graphs[(bs, stats)], self.outputs[(bs, stats)] = graph, out

    def can_run(self, fb: ForwardBatch) -> bool:
        if not (fb.is_decode and 0 < fb.batch_size <= self.max_bs):
            return False
        return fb.capture is None or (self.with_stats and getattr(fb.capture, "graph_ok", False))

    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        bs = fb.batch_size
        pbs = padded_batch_size(self.batch_sizes, bs)
        self.replays += 1
        stats = fb.capture is not None
        if stats:
            self.stats_replays += 1
            self.mask_prefix[:bs].copy_(fb.capture.fused_mask)
            self.mask_prefix[bs:pbs].zero_()
        self.input_ids[:bs].copy_(fb.input_ids)
        self.positions[:bs].copy_(fb.positions)
        self.req_pool_indices[:bs].copy_(fb.req_pool_indices)
        self.seq_lens[:bs].copy_(fb.seq_lens)
        self.out_cache_loc[:bs].copy_(fb.out_cache_loc)
        if pbs > bs:  # rows left by an earlier, larger batch would write into live slots
            self.input_ids[bs:pbs].zero_()
            self.positions[bs:pbs].zero_()
            self.req_pool_indices[bs:pbs].fill_(self.pad_row)
            self.seq_lens[bs:pbs].fill_(1)
            self.out_cache_loc[bs:pbs].zero_()
        self.graphs[(pbs, stats)].replay()
        if stats:  # views of the static buffer: the capture batch finishes them before the next replay
            fb.capture.fused_stats.update({l: self.stats[l, :bs] for l in fb.capture.layers})
        # A copy: the graph's output buffer is overwritten by the next replay.
        return self.outputs[(pbs, stats)][:bs].clone()
