"""CUDA graphs for decode: one recorded forward per batch size, replayed with padding.

A decode step of a small model on a fast GPU is mostly kernel-launch overhead (hundreds
of small kernels); replaying a recorded graph launches them all at once. A graph is
recorded for each size in ``capture_batch_sizes``; a batch of B requests runs the graph
of the smallest recorded size >= B, with padding rows that read and write only the pool's
padding slot 0 through a req_to_token row of zeros that no request owns.

Batches where no request captures attention replay the plain graph. When the server
allows capture, two more graphs per size are recorded with capture on (``GraphCaptureIO``):
in both, every layer's decode kernel also writes its fingerprint statistics into a static
buffer; in the "full" one every layer also copies its post-RoPE queries and lse into two
more. A batch whose capturing rows are all fingerprint-only (all heads, no window)
replays the "stats" graph and is finished from the statistics. Any other capturing batch
(raw, sketch, head subsets, windows, mixtures) replays the "full" graph: its rows hand
their kept queries to the exact capture kernels, which run after the replay exactly as
after an eager forward (they only need the queries, the lse and the now complete KV
cache). Non-capturing rows of a mixed batch ride along in the same replay, so one
capturing request never costs the others their graph, and ``--disable-cuda-graph`` is
never needed for capture.
Models whose forward needs the host (the MoE expert loop reads expert counts) and the
torch_native backend (its metadata has data-dependent shapes) always run eagerly.
"""
from __future__ import annotations

import bisect
import collections
import logging
from typing import TYPE_CHECKING, Any, cast

import torch

from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

if TYPE_CHECKING:
    from sglang.srt.capture.orchestrator import CaptureBatch
    from sglang.srt.layers.radix_attention import RadixAttention
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


def graph_status(graph_runner: "CudaGraphRunner | None") -> dict[str, Any]:
    """What the model info and the benchmarks report: graphs on, capture graphs on, and
    why not when capture is allowed but its graphs failed to record."""
    return {
        "cuda_graph": graph_runner is not None,
        "cuda_graph_capture": bool(graph_runner and graph_runner.with_capture),
        "cuda_graph_capture_error": graph_runner.capture_graph_error if graph_runner else None,
    }


class GraphCaptureIO:
    """Stands in for a CaptureBatch while a capture graph is recorded, and holds the capture
    graphs' static buffers (filled on every replay):

    * ``mask_prefix`` [n]: read by every layer's decode kernel;
    * ``stats`` [layers, n, Hq, STATS_DIM]: each layer's fingerprint statistics;
    * ``n_sink`` [n]: each row's attention sink (read by every layer's sink terms);
    * ``fp`` and ``fp2`` [layers, n, 20], ``sink`` [layers, n]: every layer's and row's
      fingerprint in versions 1 and 2 and its sink_mass, from those statistics and the
      sink terms each layer adds (rows without a window: n_keys = seq_len), computed at the
      end of the graph (``finish``);
    * ``q`` [layers, n, Hq, D] and ``lse`` [layers, n, Hq]: each layer's post-RoPE queries
      and per-head lse, for the capture kernels that run after the replay (written only
      while ``keep_queries``: the "full" graphs).

    ``publish`` hands a replayed batch's views to its CaptureBatch as if the layers had
    called it one by one during an eager forward."""

    def __init__(self, num_layers: int, max_bs: int, num_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        from sgl_kernel.capture_common import STATS_DIM
        from sgl_kernel.zones import FINGERPRINT_DIM

        self.mask_prefix = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.n_sink = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.stats = torch.zeros(num_layers, max_bs, num_heads, STATS_DIM, dtype=torch.float32, device=device)
        self.q = torch.zeros(num_layers, max_bs, num_heads, head_dim, dtype=dtype, device=device)
        self.lse = torch.zeros(num_layers, max_bs, num_heads, dtype=torch.float32, device=device)
        self.fp = torch.zeros(num_layers, max_bs, FINGERPRINT_DIM, dtype=torch.float32, device=device)
        self.fp2 = torch.zeros_like(self.fp)
        self.sink = torch.zeros(num_layers, max_bs, dtype=torch.float32, device=device)
        self.terms: dict[int, Any] = {}  # layer -> SinkTerms of the forward being recorded
        self.layers: dict[int, "RadixAttention"] = {}  # seen while recording: scale and softcap per layer
        self.keep_queries = True
        self.fused_stats: dict[int, torch.Tensor] = {}  # the backend's hand-over (unused: stats are static)

    # -- the CaptureBatch interface the attention backend calls during the forward --
    def fused_mask_prefix(self, layer_id: int) -> torch.Tensor:
        return self.mask_prefix  # [max_bs]: the kernel reads the batch's first B

    def stats_buffer(self, layer_id: int, batch_size: int, num_heads: int) -> torch.Tensor:
        return self.stats[layer_id, :batch_size]

    def on_layer(self, layer: "RadixAttention", q: torch.Tensor, lse: torch.Tensor | None,
                 fb: ForwardBatch) -> None:
        from sgl_kernel.sinks import sink_terms

        from sglang.srt.limits import MAX_SINK_TOKENS

        lid, bs = layer.layer_id, q.shape[0]
        self.layers[lid] = layer
        assert lse is not None  # the decode backend returns it whenever capture is on
        # every row's sink terms, bounded by the largest sink a request may ask for (no sync)
        self.terms[lid] = sink_terms(
            q, fb.kv_pool.get_kv(lid)[0], fb.req_to_token_pool.req_to_token, fb.req_pool_indices, fb.seq_lens - 1,
            scale=layer.scaling, head_lse=lse, n_sink=self.n_sink[:bs], mask_prefix=self.mask_prefix[:bs],
            logit_softcap=layer.logit_softcap, max_sink=MAX_SINK_TOKENS)
        if not self.keep_queries:
            return
        self.q[lid, :bs].copy_(q)
        if lse is not None:
            self.lse[lid, :bs].copy_(lse)

    def finish(self, bs: int, seq_lens: torch.Tensor) -> None:
        """End of the recorded forward: fingerprints of every layer and row at once, so a
        replay leaves only a selection to the host (the formula of every capture path)."""
        from sgl_kernel.capture import fingerprints_from_stats
        from sgl_kernel.capture_common import fingerprint_v2

        stats = self.stats[:, :bs]
        mean = stats.mean(2)
        self.fp[:, :bs].copy_(fingerprints_from_stats(mean, seq_lens))
        for lid, t in self.terms.items():
            self.fp2[lid, :bs].copy_(fingerprint_v2(mean[lid, :, :16], stats[lid, :, :, 17], seq_lens, t))
            self.sink[lid, :bs].copy_(t.sink_mass)
        self.terms = {}

    # -- replay --
    def load(self, capture: "CaptureBatch", bs: int, pbs: int) -> None:
        """Before a replay: the batch's mask prefixes (padding rows mask nothing)."""
        for buf, vals in ((self.mask_prefix, capture.fused_mask), (self.n_sink, capture.fused_sink)):
            if vals is not None:
                buf[:bs].copy_(vals)
            else:
                buf[:bs].zero_()
            buf[bs:pbs].zero_()

    def publish(self, capture: "CaptureBatch", fb: ForwardBatch, bs: int, queries: bool) -> None:
        """After a replay: views of this batch's rows. The fingerprints first, so the
        fingerprint rows skip the kept queries of layers the graph already covered."""
        capture.graph_fp = (self.fp[:, :bs], self.fp2[:, :bs])
        capture.graph_sink = self.sink[:, :bs]
        if not queries:
            return
        for lid in capture.layers:
            capture.on_layer(self.layers[lid], self.q[lid, :bs], self.lse[lid, :bs], fb)


class CudaGraphRunner:
    """Static input buffers and the recorded graphs, keyed by (batch size, kind): kind is
    None (no capture), "stats" (fingerprint statistics) or "full" (statistics, queries, lse).

    ``record=False`` keeps the static buffers, the padding and the capture hand-over but
    runs the forward eagerly on them instead of replaying a recording: it works on any
    device, so the tests check everything but the recording itself on CPU, and it tells
    a graph-recording bug from a buffer bug on a GPU."""

    def __init__(self, runner: "ModelRunner", batch_sizes: list[int], pad_row: int, with_capture: bool = False,
                 record: bool = True) -> None:
        self.runner = runner
        self.batch_sizes = sorted(batch_sizes)
        self.max_bs = self.batch_sizes[-1]
        self.pad_row = pad_row
        self.record = record
        dev = runner.device
        n = self.max_bs
        # Static inputs: every graph reads slices of these; replay copies the batch in.
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.req_pool_indices = torch.full((n,), pad_row, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(n, dtype=torch.long, device=dev)
        self.out_cache_loc = torch.zeros(n, dtype=torch.long, device=dev)
        self.graphs: dict[tuple[int, str | None], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, str | None], torch.Tensor] = {}
        self.pool: "torch.cuda._POOL_HANDLE | None" = None  # the memory pool the graphs share
        self.replays = 0  # batches served by a graph (tests and benchmarks read it)
        self.capture_replays = 0  # of which batches with capturing rows
        self.kind_replays: collections.Counter[str | None] = collections.Counter()
        self.with_capture = with_capture
        self.io: GraphCaptureIO | None = None
        if with_capture:
            cfg = runner.model_config
            self.io = GraphCaptureIO(cfg.num_layers, n, runner.num_heads, cfg.head_dim, runner.dtype, dev)
        # Why the capture graphs are not in use although capture is allowed (None: they are).
        self.capture_graph_error: str | None = None
        if not record:
            return
        self.stream = torch.cuda.Stream(device=dev)
        # Largest first: the smaller graphs then fit in the memory pool the first one made.
        for bs in reversed(self.batch_sizes):
            self._record(bs, None)
        if with_capture:
            self.record_capture_graphs()
        torch.cuda.synchronize(dev)
        logger.info("CUDA graphs recorded for decode batch sizes %s%s", self.batch_sizes,
                    " (each also with capture: stats, full)" if self.with_capture else "")

    def record_capture_graphs(self) -> None:
        """Record the "stats" and "full" graphs of every size. If any fails (a kernel that
        cannot be recorded on this GPU, out of memory), the server still starts: capturing
        batches then decode eagerly, as exact as before, and the others keep their graphs."""
        try:
            for bs in reversed(self.batch_sizes):
                for kind in ("stats", "full"):
                    self._record(bs, kind)
        except Exception as e:  # noqa: BLE001 - any failure here only costs capture its graphs
            self.disable_capture_graphs(f"{type(e).__name__}: {e}")

    def disable_capture_graphs(self, reason: str) -> None:
        for key in [k for k in self.graphs if k[1] is not None]:
            del self.graphs[key], self.outputs[key]
        self.with_capture = False
        self.io = None
        self.capture_graph_error = reason
        logger.warning("capture graphs could not be recorded (%s): decode batches with capturing requests run "
                       "eagerly; batches without capture still replay graphs", reason)

    def _batch(self, bs: int, kind: str | None) -> ForwardBatch:
        r = self.runner
        fb = ForwardBatch(
            mode=ForwardMode.DECODE, batch_size=bs, input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            req_pool_indices=self.req_pool_indices[:bs], seq_lens=self.seq_lens[:bs],
            out_cache_loc=self.out_cache_loc[:bs], req_to_token_pool=r.req_to_token_pool, kv_pool=r.kv_pool,
            attn_backend=r.attn_backend, seq_lens_cpu=[1] * bs,
        )
        if kind is not None:
            io = self.io
            assert io is not None  # a capture kind only while the capture graphs exist (with_capture)
            fb.capture = io
            io.keep_queries = kind == "full"
        return fb

    def _record(self, bs: int, kind: str | None) -> None:
        fb = self._batch(bs, kind)
        self.stream.wait_stream(torch.cuda.current_stream(self.runner.device))
        with torch.cuda.stream(self.stream):
            for _ in range(2):  # compiles the Triton kernels and settles lazy allocations outside the graph
                self._forward(fb, kind)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out = self._forward(fb, kind)
        self.pool = graph.pool()
        self.graphs[(bs, kind)], self.outputs[(bs, kind)] = graph, out

    def can_run(self, fb: ForwardBatch) -> bool:
        if not (fb.is_decode and 0 < fb.batch_size <= self.max_bs):
            return False
        if fb.lens is not None:  # the logit lens keeps rows from Python between layers: eager
            return False
        return fb.capture is None or self.with_capture

    def _forward(self, fb: ForwardBatch, kind: str | None) -> torch.Tensor:
        """What a graph holds: the decode forward, and with capture the fingerprints."""
        out = self.runner.model(fb.input_ids, fb.positions, fb)
        if kind is not None:
            io = self.io
            assert io is not None  # as in _batch
            io.finish(fb.batch_size, fb.seq_lens)
        return out

    def _launch(self, pbs: int, kind: str | None) -> torch.Tensor:
        if self.record:
            self.graphs[(pbs, kind)].replay()
            return self.outputs[(pbs, kind)]
        return self._forward(self._batch(pbs, kind), kind)

    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        bs = fb.batch_size
        pbs = padded_batch_size(self.batch_sizes, bs)
        self.replays += 1
        kind = None
        # a replayed batch's capture is the scheduler's CaptureBatch (GraphCaptureIO only records)
        capture = cast("CaptureBatch | None", fb.capture)
        io = self.io
        if capture is not None:
            assert io is not None  # can_run: a capturing batch replays only while the capture graphs exist
            kind = "stats" if capture.stats_only else "full"
            self.capture_replays += 1
            io.load(capture, bs, pbs)
        self.kind_replays[kind] += 1
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
        out = self._launch(pbs, kind)
        if capture is not None:  # views of the static buffers: the capture batch finishes them before the next replay
            assert io is not None  # as above
            io.publish(capture, fb, bs, queries=kind == "full")
        # A copy: the graph's output buffer is overwritten by the next replay.
        return out[:bs].clone()
