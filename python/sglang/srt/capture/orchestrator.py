"""Capture orchestration inside the scheduler: which rows and layers, and collecting results.

The math lives in ``sgl_kernel.capture``; this module only decides, per forward, which
query rows of which requests are captured, keeps each captured layer's query rows, calls
the kernel once per head subset after the forward (all captured layers in one call, since
the pool keeps every layer's K in one tensor), and keeps the small results per request
until they travel with the step's token output. A forward where no request captures gets ``fb.capture = None`` and pays
nothing.

Which query an entry describes (docs/architecture.md#which-query): ``decode_step`` i is the forward that
produced output token i, so its query sits at position prompt_len + i - 1; step 0 is the
last prompt position, computed by the prefill.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from sglang.srt.capture.logit_lens import LensBatch, LensRow
from sglang.srt.capture.payload import blocks_to_host, own_rows, take_payload
from sglang.srt.capture.wire import MOE_FIELDS, Block, Payload, RowRef, block_fields
from sglang.srt.layers.moe import SparseMoE
from sglang.srt.managers.io_struct import CaptureParams

if TYPE_CHECKING:
    from sgl_kernel.sinks import SinkTerms

    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.managers.req import Req
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

logger = logging.getLogger(__name__)

SKETCH_HUBS = 32  # top_hubs per layer in sketch mode


def kernel_top_k(p: CaptureParams) -> int:
    if p.mode == "sketch":
        return max(SKETCH_HUBS, p.top_k)
    if p.mode == "fingerprint":
        return 0
    return p.top_k


@dataclass
class ReqCaptureState:
    params: CaptureParams
    layers: list[int]
    prompt_len: int
    captured_steps: int = 0
    prompt_rows_done: int = 0
    # prompt positions below this were already considered for prompt rows: a request that
    # is prefilled again (retracted, or retried after a failed step) does not repeat them
    prompt_pos_next: int = 0
    rows: list[RowRef] = field(default_factory=list)  # captured rows not yet sent
    lens: list[dict[str, Any]] = field(default_factory=list)  # logit lens entries not yet sent
    fp_sum: torch.Tensor | None = None  # running sum of step fingerprints, on the device
    fp_count: int = 0
    cluster_run: tuple[int, int] = (-1, 0)  # (cluster id, consecutive steps in it), adaptive sampling

    def wants_step(self, decode_step: int) -> bool:
        p = self.params
        if decode_step % p.stride != 0:
            return False
        return p.max_steps == 0 or self.captured_steps < p.max_steps


@dataclass
class _Row:
    req: "Req"
    token_index: int  # row of q in this forward
    pos: int  # logical query position
    decode_step: int | None  # None for a prompt-attention row


@dataclass
class _LayerRows:
    """One captured layer's query rows of one head group, kept until the forward ends."""
    layer: int
    q: torch.Tensor  # [n, Hq, D]
    lse: torch.Tensor | None  # [n, Hq] from the attention kernel, when it is capture's first pass
    scale: float
    softcap: float


_EMPTY = torch.empty(0, dtype=torch.long)  # placeholder of a HeadGroup's device vectors until the plan sets them


@dataclass
class HeadGroup:
    """The capturing rows of a forward that select the same query heads: one kernel call
    per captured layer (or one for all of them). Host lists describe the rows; the tensors
    are the same lists on the device (moved in one copy per plan)."""

    rows: list[int]  # indices into the forward's capture rows
    all_heads: bool
    by_layers: dict[tuple[int, ...], list[int]]  # layer list -> its rows' places in the group
    window_host: list[int]  # on the host with the row positions: capture calls never sync
    identity: bool  # every row of the batch, in order: selecting the group's rows is a no-op
    top_k: int
    chunk: int
    layers: set[int]
    full: bool  # no row has a window: the attention kernel's lse is capture's first pass
    modes: set[str]
    each_head: int | None  # per-head capture group: its one head (entries carry head_id)
    versions: set[int]  # fingerprint versions of the group's fingerprint rows
    max_sink: int  # the largest attention sink of the group's rows (a host number: no sync)
    # device vectors (set by _Plan.build after the one host-to-device copy)
    heads: torch.Tensor | None = None  # None = all heads
    token_index: torch.Tensor = _EMPTY
    row_req: torch.Tensor = _EMPTY
    reqs: torch.Tensor = _EMPTY  # distinct requests of the group
    req_of_row: torch.Tensor = _EMPTY  # each row's index among them
    window: torch.Tensor = _EMPTY
    mask: torch.Tensor = _EMPTY
    sink: torch.Tensor = _EMPTY  # attention-sink positions per row (sink_mass)
    version: torch.Tensor = _EMPTY  # fingerprint version per row
    places: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)  # per layer list, when several


@dataclass
class BatchGroup(HeadGroup):
    """A HeadGroup in one forward, with this step's row positions."""

    row_pos: torch.Tensor = _EMPTY  # on the device
    host_rows: tuple[list[int], list[int]] = ([], [])  # (row positions, windows) on the host
    max_pos: int = 0

    @staticmethod
    def of(g: HeadGroup, row_pos: torch.Tensor, positions: list[int]) -> "BatchGroup":
        return BatchGroup(**{f.name: getattr(g, f.name) for f in dataclasses.fields(HeadGroup)},
                          row_pos=row_pos, host_rows=(positions, g.window_host), max_pos=max(positions))


@dataclass
class _Plan:
    """What a forward's capture does that depends only on which requests capture in which
    batch rows (not on their positions): head groups, layer lists, the index vectors on the
    device, the fused statistics' mask. A decode batch with the same rows as the previous
    one (the steady state) reuses it, so a step's setup is the row positions alone."""
    layers: list[int]
    groups: list[HeadGroup]
    fused_gi: int | None
    fused_layers: list[int]
    fused_mask: torch.Tensor | None  # [B] mask prefix per row of the batch
    fused_sink: torch.Tensor | None  # [B] attention sink per row of the batch
    fused_layer_ids: torch.Tensor | None
    key: tuple = ()
    # the requests of the key: held, so no id in the key can be reused by a new request
    reqs: list[Any] = field(default_factory=list)

    @staticmethod
    def build(rows: list[_Row], fb: "ForwardBatch") -> "_Plan":
        dev = fb.input_ids.device
        # Group rows by head subset: one kernel call per group per layer.
        # key: the averaged head subset (None = all), or ("each", h) for per-head capture, whose
        # rows also join one group per head
        by_heads: dict[tuple[Any, ...] | None, list[int]] = {}
        params: list[CaptureParams] = []  # each row's request's
        pool_rows: list[int] = []  # each row's request's req_to_token row
        for i, r in enumerate(rows):
            p, pool_row = r.req.capture, r.req.req_pool_idx
            # rows are made only for capturing requests of this forward (CaptureHook.prepare)
            assert p is not None and pool_row is not None
            params.append(p)
            pool_rows.append(pool_row)
            if p.heads_each:
                for h in p.heads_each:
                    by_heads.setdefault(("each", h), []).append(i)
                continue
            ids = p.head_ids
            by_heads.setdefault(tuple(ids) if ids else None, []).append(i)
        groups: list[HeadGroup] = []
        host: list[list[int]] = []  # every group's index vectors, moved to the device in one copy
        names = ("heads", "token_index", "row_req", "reqs", "req_of_row", "window", "mask", "sink", "version")
        for group_key, idx in by_heads.items():
            each = group_key[1] if group_key is not None and group_key[0] == "each" else None
            heads = (each,) if each is not None else group_key
            rs = [rows[i] for i in idx]
            req_index = {p: j for j, p in enumerate(dict.fromkeys(pool_rows[i] for i in idx))}
            vecs: dict[str, list[int]] = {
                "heads": list(heads or ()),  # empty = all heads
                "token_index": [r.token_index for r in rs],
                "row_req": [pool_rows[i] for i in idx],
                "reqs": list(req_index),
                "req_of_row": [req_index[pool_rows[i]] for i in idx],
                "window": [params[i].window for i in idx],
                "mask": [params[i].mask_prefix for i in idx],
                "sink": [params[i].sink_tokens for i in idx],
                "version": [params[i].fingerprint_version for i in idx],
            }
            host += vecs.values()
            by_layers: dict[tuple[int, ...], list[int]] = {}
            for j, r in enumerate(rs):
                by_layers.setdefault(tuple(r.req.capture_state.layers), []).append(j)
            if len(by_layers) > 1:  # finalize selects each list's rows on the device
                host += by_layers.values()
            groups.append(HeadGroup(
                rows=idx, all_heads=not heads, by_layers=by_layers, window_host=vecs["window"],
                identity=vecs["token_index"] == list(range(fb.batch_size)),
                top_k=max(kernel_top_k(params[i]) for i in idx),
                chunk=min(params[i].chunk_size for i in idx),
                layers={l for r in rs for l in r.req.capture_state.layers},
                full=all(params[i].window == 0 for i in idx),
                modes={params[i].mode for i in idx},
                each_head=each,
                versions={params[i].fingerprint_version for i in idx if params[i].mode == "fingerprint"},
                max_sink=max(vecs["sink"]),
            ))
        # A decode batch whose all-heads group is fingerprint-only with no window takes its
        # statistics from the attention kernel itself (sgl_kernel.attention_cpu, or
        # attention_triton's stats): the backend asks fused_mask_prefix(layer) and leaves
        # [B, H, 18] (hist[16], masked mass, entropy per row and head, or already averaged
        # over heads with H = 1) in fused_stats. A replayed CUDA graph hands over every
        # layer's statistics, queries and lse at once (cuda_graph_runner.GraphCaptureIO).
        fused_gi, fused_layers = None, []
        if fb.is_decode:
            for gi, g in enumerate(groups):
                if g.all_heads and all(params[i].mode == "fingerprint" and params[i].window == 0 for i in g.rows):
                    fused_gi, fused_layers = gi, sorted(g.layers)
                    mask, sink = [0] * fb.batch_size, [0] * fb.batch_size
                    for i in g.rows:
                        mask[rows[i].token_index] = params[i].mask_prefix
                        sink[rows[i].token_index] = params[i].sink_tokens
                    host += [mask, sink, fused_layers]
        flat = torch.tensor([x for v in host for x in v], dtype=torch.long).to(dev)  # the one copy
        parts = iter(flat.split([len(v) for v in host]))
        for g in groups:
            for key in names:
                setattr(g, key, next(parts))
            if g.all_heads:
                g.heads = None
            g.places = {lay: next(parts) for lay in g.by_layers} if len(g.by_layers) > 1 else {}
        fused_mask = fused_sink = fused_layer_ids = None
        if fused_gi is not None:
            fused_mask, fused_sink, fused_layer_ids = next(parts), next(parts), next(parts)
        layers = sorted({l for r in rows for l in r.req.capture_state.layers})
        return _Plan(layers, groups, fused_gi, fused_layers, fused_mask, fused_sink, fused_layer_ids)


class CaptureBatch:
    """Capture work of one forward; ``on_layer`` is called by the attention backend."""

    def __init__(self, hook: "CaptureHook", rows: list[_Row], fb: "ForwardBatch", plan: _Plan | None = None) -> None:
        self.hook = hook
        self.rows = rows
        self.plan = plan = plan or _Plan.build(rows, fb)
        self.layers = plan.layers
        self.layer_set = set(plan.layers)
        self.device = dev = fb.input_ids.device
        # This step's row positions: on the host (capture calls never sync) and on the device.
        pos = [[rows[i].pos for i in g.rows] for g in plan.groups]
        flat = torch.tensor([p for ps in pos for p in ps], dtype=torch.long).to(dev)
        dev_pos = flat.split([len(ps) for ps in pos]) if len(pos) > 1 else (flat,)
        self.groups = [BatchGroup.of(g, dp, ps) for g, ps, dp in zip(plan.groups, pos, dev_pos)]
        self.fused_gi = plan.fused_gi
        self.fused_layers = plan.fused_layers
        self.fused_mask, self.fused_sink = plan.fused_mask, plan.fused_sink
        self.fused_layer_ids = plan.fused_layer_ids
        self.fused_stats: dict[int, torch.Tensor] = {}
        # [model layers, B, 20] x 2 versions and [model layers, B]: the fingerprints and sink
        # masses a replayed capture graph computed for every layer and row from its
        # statistics (fixed shapes, so inside the graph)
        self.graph_fp: tuple[torch.Tensor, torch.Tensor] | None = None
        self.graph_sink: torch.Tensor | None = None
        self.fused_fp: dict[int, torch.Tensor] = {}  # layer -> [n rows of the fused group, 20]
        self.fused_row_fp: torch.Tensor | None = None  # [n, 20] when every row has the same layers
        self.fused_sink_mass: torch.Tensor | None = None  # [n, fused_layers] from a replayed graph
        # every capturing row is finished from the decode kernel's statistics (a CUDA graph
        # without query copies can run the batch)
        self.stats_only = self.fused_gi is not None and len(self.groups) == 1
        self.results: dict[tuple[int, int], Any] = {}  # (group, layer) -> CaptureResult
        # group -> (CaptureResult of all its layers in one call, rows layer-major; the layers in order)
        self.combined: dict[int, tuple[Any, list[int]]] = {}
        self.pending: dict[int, list[_LayerRows]] = {}  # group -> captured layers' rows, in layer order
        self.fb: "ForwardBatch | None" = None
        self.moe: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.sinks: dict[tuple[int, int], "SinkTerms"] = {}  # (group, layer) -> the rows' sink terms

    def on_layer(self, layer: "RadixAttention", q: torch.Tensor, lse: torch.Tensor | None,
                 fb: "ForwardBatch") -> None:
        """Keep this layer's query rows (and the attention's lse); the kernel runs once per
        head group after the forward, over all captured layers together."""
        lid = layer.layer_id
        if lid not in self.layer_set:
            return
        self.fb = fb
        for gi, g in enumerate(self.groups):
            if lid in g.layers:
                if gi == self.fused_gi and (self.graph_fp is not None or lid in self.fused_stats):
                    if self.graph_fp is None:  # the kernel computed this layer's statistics: add the sink's
                        self._sink_terms(gi, lid, q[g.token_index], lse[g.token_index] if lse is not None else None,
                                         layer.scaling, layer.logit_softcap, fb)
                    continue
                ti = g.token_index
                self.pending.setdefault(gi, []).append(
                    _LayerRows(lid, q[ti], lse[ti] if lse is not None and g.full else None, layer.scaling,
                               layer.logit_softcap))

    def fused_mask_prefix(self, layer_id: int) -> torch.Tensor | None:
        """mask_prefix [B] when the attention kernel should also compute this layer's
        capture statistics (see fused_stats), else None."""
        if self.fused_gi is None or layer_id not in self.groups[self.fused_gi].layers:
            return None
        return self.fused_mask

    def stats_buffer(self, layer_id: int, batch_size: int, num_heads: int) -> torch.Tensor:
        """Where the attention kernel writes one layer's statistics [B, Hq, 18]."""
        from sgl_kernel.capture_common import STATS_DIM

        return torch.empty(batch_size, num_heads, STATS_DIM, dtype=torch.float32, device=self.device)

    def _run_fused(self) -> None:
        """Fingerprints of the fused group from the kernels' statistics: every layer and row
        in one call (or already computed by a replayed graph), and one mean over layers
        when all rows share their layer list (then no per-layer views are made)."""
        from sgl_kernel.capture import fingerprints_from_stats
        from sgl_kernel.capture_common import fingerprint_v2
        from sgl_kernel.sinks import SinkTerms

        gi = self.fused_gi
        assert gi is not None  # after_forward calls this only for a batch with a fused group
        g = self.groups[gi]
        if self.graph_fp is not None:
            layers = self.fused_layers
            layer_ids = self.fused_layer_ids
            assert layer_ids is not None and self.graph_sink is not None  # _Plan.build / GraphCaptureIO.publish
            fps = [f.index_select(0, layer_ids) for f in self.graph_fp]  # [L, B, 20] per version
            sink = self.graph_sink.index_select(0, layer_ids)  # [L, B]
            if not g.identity:
                fps = [f.index_select(1, g.token_index) for f in fps]
                sink = sink.index_select(1, g.token_index)
            fp = self._by_version(g.version, g.versions, fps[0], fps[1])
            self.fused_sink_mass = sink.transpose(0, 1)
        else:
            layers = [l for l in self.fused_layers if l in self.fused_stats]
            if not layers:
                return
            stats = torch.stack([self.fused_stats[l] for l in layers])  # [L, B, H, 18]
            stats = stats.index_select(1, g.token_index)  # [L, n, H, 18]
            mean = stats.mean(2)
            n_keys = g.row_pos + 1  # no window
            fp1 = fingerprints_from_stats(mean, n_keys) if 1 in g.versions else None
            fp2 = None
            terms = [self.sinks[(gi, l)] for l in layers]
            if 2 in g.versions:
                n, n_l = n_keys.numel(), len(layers)
                cat = SinkTerms.cat(terms)
                fp2 = fingerprint_v2(mean[..., :16].reshape(n_l * n, -1), stats[..., 17].reshape(n_l * n, -1),
                                     n_keys.repeat(n_l), cat).view(n_l, n, -1)
            fp = self._by_version(g.version, g.versions, fp1, fp2)
        if len(g.by_layers) == 1 and list(next(iter(g.by_layers))) == layers:  # every row has these layers
            self.fused_row_fp = fp.mean(0)
        else:
            self.fused_fp = {l: fp[i] for i, l in enumerate(layers)}

    @staticmethod
    def _by_version(version: torch.Tensor, versions: set[int], fp1: torch.Tensor | None,
                    fp2: torch.Tensor | None) -> torch.Tensor:
        """Each row's fingerprint in its request's version: fp1 / fp2 [..., rows, 20] (the one
        of a version no row asks for may be None), version [rows]."""
        if versions != {1, 2}:
            out = fp1 if versions == {1} else fp2
            assert out is not None  # computed for the group's versions
            return out
        assert fp1 is not None and fp2 is not None
        return torch.where((version == 1)[:, None], fp1, fp2)

    def _run_pending(self) -> None:
        from sgl_kernel.capture import attention_capture

        fb = self.fb
        assert fb is not None  # on_layer set it when it kept the pending rows
        for gi, items in self.pending.items():
            g = self.groups[gi]
            kw = dict(top_k=g.top_k, head_ids=g.heads, chunk_size=g.chunk)
            table = fb.req_to_token_pool.req_to_token
            if len(items) == 1 or len({(it.scale, it.softcap) for it in items}) > 1:
                for it in items:
                    res = self.results[(gi, it.layer)] = attention_capture(
                        it.q, fb.kv_pool.get_kv(it.layer)[0], table, g.row_req, g.row_pos, scale=it.scale,
                        window=g.window, mask_prefix=g.mask, logit_softcap=it.softcap, head_lse=it.lse,
                        host_rows=g.host_rows, **kw)
                    self._sink_terms(gi, it.layer, it.q, res.head_lse, it.scale, it.softcap, fb)
                continue
            # All layers in one call: K of every layer is one pool tensor, so row r of
            # layer l reads slots offset by l * slots_per_layer through its own table row.
            n_layers = len(items)
            reqs, inverse = g.reqs, g.req_of_row
            span = g.max_pos + 1
            slots = table[:, :span].index_select(0, reqs).long()  # [R, span]
            per_layer = fb.kv_pool.slots_per_layer
            lses = [it.lse for it in items if it.lse is not None]
            res = attention_capture(
                torch.cat([it.q for it in items]), fb.kv_pool.k_all_layers(),
                torch.cat([slots + it.layer * per_layer for it in items]),
                torch.cat([inverse + j * reqs.numel() for j in range(n_layers)]), g.row_pos.repeat(n_layers),
                scale=items[0].scale, window=g.window.repeat(n_layers), mask_prefix=g.mask.repeat(n_layers),
                logit_softcap=items[0].softcap, head_lse=torch.cat(lses) if len(lses) == n_layers else None,
                host_rows=(g.host_rows[0] * n_layers, g.host_rows[1] * n_layers), **kw)
            self.combined[gi] = (res, [it.layer for it in items])
            n = g.row_pos.numel()
            for j, it in enumerate(items):
                self._sink_terms(gi, it.layer, it.q, res.head_lse[j * n:(j + 1) * n], it.scale, it.softcap, fb)
        self.pending.clear()

    def _sink_terms(self, gi: int, layer: int, q: torch.Tensor, head_lse: torch.Tensor | None, scale: float,
                    softcap: float, fb: "ForwardBatch") -> None:
        """The sink terms of the group's rows at one layer: sink_mass of every mode, and what
        the version-2 fingerprint takes out of the statistics (sgl_kernel.sinks)."""
        from sgl_kernel.sinks import sink_terms

        assert head_lse is not None  # the exact passes and the fused decode kernels give each head's lse
        g = self.groups[gi]
        self.sinks[(gi, layer)] = sink_terms(
            q, fb.kv_pool.get_kv(layer)[0], fb.req_to_token_pool.req_to_token, g.row_req, g.row_pos, scale=scale,
            head_lse=head_lse, n_sink=g.sink, head_ids=g.heads, window=g.window, mask_prefix=g.mask,
            logit_softcap=softcap, max_sink=g.max_sink)

    def after_forward(self, model: torch.nn.Module) -> None:
        """Run the capture kernel on the kept rows, and read MoE routing of the captured
        layers (it runs after attention in each layer)."""
        if self.pending:
            self._run_pending()
        if self.fused_gi is not None and (self.fused_stats or self.graph_fp is not None):
            self._run_fused()
        moe = self.hook.moe_mlps(model)
        for lid in self.layers:
            mlp = moe.get(lid)
            if mlp is not None and mlp.last_topk_ids is not None:
                weights = mlp.last_topk_weights
                assert weights is not None  # SparseMoE.forward sets both
                self.moe[lid] = (mlp.last_topk_ids, weights)

    def finalize(self) -> tuple[list[Block], list[tuple[str, RowRef]]]:
        """One RowRef per captured row, pointing at its row of a Block: the results are
        stacked per (head group, layer list) with a few batched ops, not per row, and reach
        the host together after sampling (CaptureHook.after_step). Returns the step's blocks
        and the rows (with their mode) that wait for a later step (non-streaming requests)."""
        blocks: list[Block] = []
        waiting: list[tuple[str, RowRef]] = []
        for gi, g in enumerate(self.groups):
            for layers, places in g.by_layers.items():
                blk = self._block(gi, list(layers), places)
                blocks.append(blk)
                for b, j in enumerate(places):
                    row = self.rows[g.rows[j]]
                    p = row.req.capture
                    assert p is not None  # a capture row's request captures
                    ref = RowRef(blk, b, -1 if row.decode_step is None else row.decode_step, row.pos,
                                 kernel_top_k(p))
                    row.req.capture_state.rows.append(ref)
                    if not row.req.stream:
                        waiting.append((p.mode, ref))
                    if g.each_head is None or p.heads_each is None or g.each_head == p.heads_each[0]:
                        self._after_record(row, blk, b)  # once per row, not once per head
        return blocks, waiting

    def _layers_of(self, gi: int, name: str, layers: list[int]) -> torch.Tensor:
        """Field ``name`` of group gi's results as [rows of the group, layers, ...]."""
        return self._derived(gi, layers, lambda res, order: getattr(res, name))

    def _derived(self, gi: int, layers: list[int], fn: Any) -> torch.Tensor:
        """fn(result, its layers) -> [result rows, ...] of group gi's results as [rows of the
        group, layers, ...]: views of a combined call's layer-major rows where possible (no
        per-layer slicing)."""
        if gi in self.combined:
            res, order = self.combined[gi]
            t = fn(res, order).unflatten(0, (len(order), -1))  # [L_all, n, ...]
            if layers != order:
                t = torch.stack([t[order.index(l)] for l in layers])
            return t.transpose(0, 1)
        return torch.stack([fn(self.results[(gi, l)], [l]) for l in layers], 1)

    def _fingerprints(self, gi: int, layers: list[int]) -> torch.Tensor:
        """[rows of the group, layers, 20]: each row's fingerprint, in its request's version,
        from the exact capture results."""
        from sgl_kernel.sinks import SinkTerms

        g = self.groups[gi]

        def fp(res: Any, order: list[int]) -> torch.Tensor:
            fp1 = res.fingerprint if 1 in g.versions else None
            fp2 = None
            if 2 in g.versions:
                fp2 = res.fingerprint_v2(SinkTerms.cat([self.sinks[(gi, l)] for l in order]))
            return self._by_version(g.version.repeat(len(order)), g.versions, fp1, fp2)

        return self._derived(gi, layers, fp)

    def _sink_mass(self, gi: int, layers: list[int]) -> torch.Tensor:
        """[rows of the group, layers] sink_mass."""
        if gi == self.fused_gi and self.fused_sink_mass is not None:  # a replayed graph covered every layer
            return torch.stack([self.fused_sink_mass[:, self.fused_layers.index(l)] for l in layers], 1)
        return torch.stack([self.sinks[(gi, l)].sink_mass for l in layers], 1)

    def _block(self, gi: int, layers: list[int], places: list[int]) -> Block:
        """The rows ``places`` of group gi, which all capture ``layers``: the arrays of their
        modes (``wire.block_fields``)."""
        g = self.groups[gi]
        if len(places) == len(g.rows):
            modes = g.modes
        else:
            modes = set()
            for j in places:
                p = self.rows[g.rows[j]].req.capture
                assert p is not None  # a capture row's request captures
                modes.add(p.mode)
        sel = g.places.get(tuple(layers))  # None: every row of the group

        def rows_of(t: torch.Tensor) -> torch.Tensor:
            return t if sel is None else t.index_select(0, sel)

        blk = Block(layers, head=g.each_head, moe_layers=[l for l in layers if l in self.moe])
        arrays = blk.tensors
        for name in block_fields(modes, bool(blk.moe_layers)):
            if name == "sink_mass":
                arrays[name] = rows_of(self._sink_mass(gi, layers))
            elif name == "fingerprint":
                arrays[name] = fp = self._row_fingerprints(gi, layers, rows_of)
                if self.hook.hints is not None:
                    assigned = self.hook.hints.assign(fp, rows_of(g.version))
                    if assigned is not None:
                        arrays["cluster_idx"], blk.snapshot = assigned
            elif name in MOE_FIELDS:  # [rows, moe layers, experts per token]: self.moe[l] is (ids, weights)
                ti, which = rows_of(g.token_index), MOE_FIELDS.index(name)
                arrays[name] = torch.stack([self.moe[l][which].index_select(0, ti) for l in blk.moe_layers], 1)
            else:  # a field of the kernel's CaptureResult, [rows, layers, ...]
                arrays[name] = rows_of(self._layers_of(gi, name, layers))
        return blk

    def _row_fingerprints(self, gi: int, layers: list[int],
                          rows_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """[rows of the block, 20]: each row's fingerprint, the mean over ``layers``."""
        if gi == self.fused_gi and (self.fused_fp or self.fused_row_fp is not None):
            fp = (self.fused_row_fp if self.fused_row_fp is not None
                  else torch.stack([self.fused_fp[l] if l in self.fused_fp
                                    else self._fingerprints(gi, [l])[:, 0] for l in layers]).mean(0))
            return rows_of(fp)
        return rows_of(self._fingerprints(gi, layers)).mean(1)

    def _after_record(self, row: _Row, blk: Block, b: int) -> None:
        """Step bookkeeping of one captured row; the sidecar and adaptive sampling read
        its fingerprint while it is still on the device."""
        if row.decode_step is None:
            return
        st = row.req.capture_state
        st.captured_steps += 1
        p = row.req.capture
        assert p is not None  # a capture row's request captures
        if p.mode != "fingerprint":
            return
        if self.hook.sidecar is not None:  # (indexing a row is a device op: only when someone listens)
            self.hook.on_fingerprint(row.req, row.decode_step, blk.tensors["fingerprint"][b])
        if p.adaptive_sampling and "cluster_idx" in blk.tensors:
            self.hook.adapt(row.req, row.decode_step, int(blk.tensors["cluster_idx"][b]), blk.snapshot)


class CaptureHook:
    """Installed on a Scheduler when the server allows capture."""

    def __init__(self, sched: "Scheduler") -> None:
        self.sched = sched
        self.num_layers = sched.cfg.num_layers
        self.current: CaptureBatch | None = None
        self.plan: _Plan | None = None  # the last decode batch's, reused while its rows stay the same
        self._moe_mlps: dict[int, SparseMoE] | None = None
        # this step's blocks (moved to the host after sampling) and the rows (with their
        # request's mode) that then copy their arrays out, because their request sends them
        # at a later step
        self.step_blocks: list[Block] = []
        self.step_waiting: list[tuple[str, RowRef]] = []
        self.lens: LensBatch | None = None  # this step's logit lens rows, read out after sampling
        self.adaptive_steps = sched.args.attention_adaptive_steps
        self.hints = None
        if sched.args.attention_hints_url:
            from sglang.srt.capture.hints import HintsClient

            self.hints = HintsClient(sched.args.attention_hints_url, sched.args.attention_hints_refresh_interval,
                                     sched.device)
        self.sidecar = None
        if sched.args.attention_sidecar_url:
            from sglang.srt.capture.fingerprint_stream import FingerprintStream

            self.sidecar = FingerprintStream(sched.args.attention_sidecar_url,
                                             model=sched.runner.files.display_name)

    def moe_mlps(self, model: torch.nn.Module) -> dict[int, SparseMoE]:
        """The model's MoE blocks by layer id (found once: the model does not change)."""
        if self._moe_mlps is None:
            layers = getattr(getattr(model, "model", None), "layers", [])
            self._moe_mlps = {i: m.mlp for i, m in enumerate(layers) if isinstance(getattr(m, "mlp", None), SparseMoE)}
        return self._moe_mlps

    @property
    def dropped(self) -> int:
        return self.sidecar.dropped if self.sidecar else 0

    def on_add(self, req: "Req") -> None:
        p = req.capture
        if p is None:
            return
        if p.resolved_for != req.prompt_len:
            # the front end's door resolves every request it sends; an in-process driver's
            # params get the same one check here (CaptureParams.resolved)
            p = req.capture = p.resolved(self.num_layers, self.sched.runner.num_heads, req.prompt_len)
        req.capture_state = ReqCaptureState(p, p.layers, req.prompt_len)

    def prepare(self, reqs: list["Req"], fb: "ForwardBatch") -> CaptureBatch | None:
        self.lens = None  # a forward whose rows were never sampled leaves none behind
        rows: list[_Row] = []
        if fb.is_decode:
            for i, r in enumerate(reqs):
                st = r.capture_state
                if st is not None and st.wants_step(len(r.output_ids)):
                    rows.append(_Row(r, i, r.kv_len, len(r.output_ids)))
        else:
            start = 0
            for r, take in zip(reqs, fb.extend_seq_lens_cpu):
                st = r.capture_state
                if st is not None:
                    lo, hi = r.kv_len, r.kv_len + take  # positions computed by this forward
                    p = r.capture
                    assert p is not None  # on_add gives a capture state only to a capturing request
                    if p.include_prompt_attention:
                        rows += self._prompt_rows(r, lo, hi, start)
                    if hi == len(r.fill_ids) and st.wants_step(len(r.output_ids)):
                        rows.append(_Row(r, start + take - 1, hi - 1, len(r.output_ids)))
                start += take
        if not rows:
            return None
        lens_rows = [LensRow(r.req, r.token_index, r.decode_step) for r in rows
                     if r.decode_step is not None and r.req.capture is not None and r.req.capture.logit_lens_layers]
        if lens_rows:
            fb.lens = self.lens = LensBatch(lens_rows, fb.input_ids.device)
        plan = None
        if fb.is_decode:
            key = (fb.batch_size, tuple((id(r.req), r.req.req_pool_idx, r.token_index) for r in rows))
            if self.plan is not None and self.plan.key == key:
                plan = self.plan
        self.current = CaptureBatch(self, rows, fb, plan)
        if fb.is_decode and plan is None:
            self.plan = self.current.plan
            self.plan.key, self.plan.reqs = key, [r.req for r in rows]
        return self.current

    def _prompt_rows(self, r: "Req", lo: int, hi: int, start: int) -> list[_Row]:
        """Prompt positions in [lo, hi) other than the last one (that is decode step 0);
        private (masked) query positions are never captured."""
        p, st = r.capture, r.capture_state
        assert p is not None  # called only for a request with a capture state
        out = []
        end = min(hi, r.prompt_len - 1)
        first, st.prompt_pos_next = max(lo, p.mask_prefix, st.prompt_pos_next), max(st.prompt_pos_next, end)
        for pos in range(first, end):
            if pos % p.stride:
                continue
            if p.max_steps and st.prompt_rows_done >= p.max_steps:
                break
            st.prompt_rows_done += 1
            out.append(_Row(r, start + pos - lo, pos, None))
        return out

    def after_forward(self, model: torch.nn.Module) -> None:
        if self.current is not None:
            self.current.after_forward(model)
            blocks, waiting = self.current.finalize()
            self.step_blocks += blocks
            self.step_waiting += waiting
            self.current = None

    def checkpoint(self, reqs: list["Req"]) -> list[tuple["Req", tuple]]:
        """What a step may change in its requests' capture state, to undo a failed step."""
        cp = []
        for r in reqs:
            st = r.capture_state
            if st is not None:
                cp.append((r, (len(st.rows), len(st.lens), st.captured_steps, st.prompt_rows_done, st.prompt_pos_next,
                               st.fp_sum, st.fp_count, st.cluster_run, r.sampling_switch, r.params)))
        return cp

    def rollback(self, cp: list[tuple["Req", tuple]]) -> None:
        """Forget a failed step: its batch, blocks and rows; the requests' capture state
        is as before the step, so their retry captures the same rows once. (Fingerprints
        already handed to the sidecar stream cannot be recalled.)"""
        self.current = None
        self.plan = None
        self.lens = None
        self.step_blocks = []
        self.step_waiting = []
        for r, (n_rows, n_lens, steps, rows, pos_next, fp_sum, fp_count, run, switch, params) in cp:
            st = r.capture_state
            del st.rows[n_rows:]
            del st.lens[n_lens:]
            st.captured_steps, st.prompt_rows_done, st.prompt_pos_next = steps, rows, pos_next
            st.fp_sum, st.fp_count, st.cluster_run = fp_sum, fp_count, run
            r.sampling_switch, r.params = switch, params

    def after_step(self, reqs: list["Req"], tokens: list[int]) -> None:
        """After sampling: this step's blocks reach the host in one copy per dtype; rows
        sent later (non-streaming requests) copy their arrays out, so no block outlives its
        step there. Streaming requests' outputs of this step refer to the blocks' rows. The
        logit lens reads out now that the produced ``tokens`` are known."""
        if self.lens is not None:
            lens, self.lens = self.lens, None
            produced = {id(r): t for r, t in zip(reqs, tokens)}
            lens.rows = [row for row in lens.rows if id(row.req) in produced]  # not failed in sampling
            if lens.rows:
                lens.readout(self.sched.runner.model, produced)
        if self.step_blocks:
            blocks_to_host(self.step_blocks)
            self.step_blocks = []
        if self.step_waiting:
            own_rows(self.step_waiting)
            self.step_waiting = []

    def on_fingerprint(self, req: "Req", step: int, v: torch.Tensor) -> None:
        if self.sidecar is None:
            return
        # Device tensors go to the emitter's thread, which copies them to the host:
        # the scheduler never waits on a device-to-host copy for the sidecar.
        st = req.capture_state
        v = v.detach().double()
        self.sidecar.step(req.rid, step, v, st.params.fingerprint_version)
        st.fp_sum = v.clone() if st.fp_sum is None else st.fp_sum + v
        st.fp_count += 1

    def adapt(self, req: "Req", step: int, idx: int, snap: Any) -> None:
        """Adaptive sampling: after ``adaptive_steps`` consecutive fingerprint steps in one
        cluster, switch the request's temperature and top_p to that cluster's hint, once.
        The switch takes effect for the token of the step that completed the run. (Reading
        idx is one host sync, only for adaptive requests.)"""
        if req.sampling_switch is not None:
            return
        st = req.capture_state
        cid = snap.ids[idx] if idx >= 0 else -1
        last, n = st.cluster_run
        st.cluster_run = (cid, n + 1 if cid == last else 1)
        if cid < 0 or st.cluster_run[1] < self.adaptive_steps:
            return
        hint = snap.hints[idx]
        before = {"temperature": req.params.temperature, "top_p": req.params.top_p}
        req.params = dataclasses.replace(req.params, temperature=hint["temperature"], top_p=hint["top_p"])
        req.sampling_switch = {"step": step, "before": before, "after": dict(hint),
                               "cluster_id": cid, "zone": snap.zones[idx]}

    def on_finish(self, req: "Req") -> None:
        st = req.capture_state
        if self.sidecar is not None and st is not None and st.fp_count:
            self.sidecar.request_summary(req.rid, st.fp_sum / st.fp_count, st.fp_count, st.params.fingerprint_version)

    def take_lens(self, req: "Req") -> list[dict[str, Any]] | None:
        st = req.capture_state
        if st is None or not st.lens:
            return None
        out, st.lens = st.lens, []
        return out

    def take_payload(self, req: "Req") -> Payload | None:
        st = req.capture_state
        if st is None or not st.rows:
            return None
        rows, st.rows = st.rows, []
        return take_payload(st.params, rows, req.stream)
