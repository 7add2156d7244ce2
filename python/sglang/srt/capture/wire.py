"""The capture payload schema: what a step's results are, from the scheduler to the front end
(numpy only: the HTTP process never imports torch).

A result takes three shapes between the kernel's ``CaptureResult`` and the API's entries:

* ``Block``: one forward's results for the rows of one head group that share a layer list,
  [rows, ...] arrays (layers second where there are layers). Made on the device
  (``CaptureBatch._block``); ``payload.blocks_to_host`` turns its arrays into numpy in place,
  one device-to-host copy per dtype for all of a step's blocks.
* ``RowRef``: one captured query row of a request, row ``row`` of ``block``. A request that
  sends at a later step (non-streaming) makes its rows ``own`` one-row copies, so the step's
  blocks do not outlive it.
* ``Payload``: a request's rows in one output message, with the request's mode and k. The
  step's outputs are pickled in one message, so a block that many streaming requests point
  into is serialized once per step, not once per request; the scheduler does no
  per-request array work.

``entries.build_entries`` turns a payload's rows into the API's entries. ``MODE_FIELDS`` is the
one declaration of the arrays each mode carries: it decides what ``_block`` stacks, what a
row's own copy keeps, and what ``build_entries`` reads.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

    from sglang.srt.capture.hints import Snapshot

# Every array a block can carry and its dtype on the way to the entries, in stacking order.
FIELDS: dict[str, type] = {
    "topk_pos": np.int32, "topk_prob": np.float32, "topk_logit": np.float32,  # [rows, layers, k]
    "lse_ref": np.float32, "masked_mass": np.float32,  # [rows, layers]
    "hist": np.float32,  # [rows, layers, 16]
    "entropy": np.float32,  # [rows, layers]
    "fingerprint": np.float32,  # [rows, 20]: the mean over the layers
    "sink_mass": np.float32,  # [rows, layers]
    "moe_ids": np.int64, "moe_w": np.float32,  # [rows, moe layers, experts per token]
}
# [rows, layers, k] arrays hold the largest k of the block's rows: a row reads its own k
TOPK_FIELDS = ("topk_pos", "topk_prob", "topk_logit")
# Which arrays a row of each mode carries (prompt rows are raw rows: the raw fields)
RAW_FIELDS = (*TOPK_FIELDS, "lse_ref", "masked_mass", "sink_mass")
MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "raw": RAW_FIELDS,
    "sketch": (*RAW_FIELDS, "hist", "entropy"),
    "fingerprint": ("fingerprint", "sink_mass"),
}
MOE_FIELDS = ("moe_ids", "moe_w")  # with every mode, in blocks of MoE layers


def block_fields(modes: Iterable[str], moe: bool) -> list[str]:
    """The arrays of a block whose rows have these modes, in ``FIELDS`` order."""
    want = {f for m in modes for f in MODE_FIELDS[m]} | (set(MOE_FIELDS) if moe else set())
    return [f for f in FIELDS if f in want]


@dataclass(eq=False)
class Block:
    """Capture results of some rows: every array is [rows, ...] (see ``FIELDS``). ``tensors``
    on the device until ``payload.blocks_to_host`` moves them to ``arrays`` (numpy) and
    resolves ``cluster_idx`` with the hints ``snapshot`` into ``cluster_ids`` / ``cluster_zones``;
    only a block on the host travels (pickles)."""
    layers: list[int]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    moe_layers: list[int] = field(default_factory=list)
    snapshot: Snapshot | None = None  # the hints snapshot that tensors["cluster_idx"] indexes
    head: int | None = None  # per-head capture: the one query head of every row (else the head mean)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # per row, from the sidecar's centroids (manifold hints): cluster id (-1 = noise) and zone
    cluster_ids: list[int] | None = None
    cluster_zones: list[str | None] | None = None
    on_host: bool = False
    owned: bool = False  # copies that belong to one request's rows (``RowRef.own``, ``merge_owned``)

    def __getstate__(self) -> dict[str, Any]:
        assert self.on_host, "a capture block travels once on the host (payload.blocks_to_host)"
        return {k: v for k, v in self.__dict__.items() if k not in ("tensors", "snapshot")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, tensors={}, snapshot=None)

    def row(self, key: str, row: int, top_k: int) -> np.ndarray | None:
        """Row ``row`` of array ``key`` (its own top-k), a view; None if the block has no such array."""
        arr = self.arrays.get(key)
        if arr is None:
            return None
        return arr[row, :, :top_k] if key in TOPK_FIELDS else arr[row]

    def hint(self, row: int) -> tuple[int, str | None] | None:
        """Row ``row``'s manifold hint (cluster id, zone), if the block has hints."""
        if self.cluster_ids is None:
            return None
        assert self.cluster_zones is not None  # the hints set both lists together (payload.blocks_to_host)
        return self.cluster_ids[row], self.cluster_zones[row]

    def set_hints(self, hints: list[tuple[int, str | None] | None]) -> None:
        """Per row hints (all or none of them: ``kind``)."""
        if hints and hints[0] is not None:
            self.cluster_ids = [h[0] for h in hints if h is not None]
            self.cluster_zones = [h[1] for h in hints if h is not None]

    def kind(self) -> tuple[Any, ...]:
        """Rows of blocks of one kind can share one block (``merge_owned``)."""
        return (tuple(self.layers), tuple(self.moe_layers), self.head, self.cluster_ids is None,
                tuple((k, v.shape[1:], v.dtype.str) for k, v in self.arrays.items()))


class RowRef:
    """One captured query row of a request: row ``row`` of ``block``; which decode step
    (-1: a prompt-attention row) and query position; this request's k (a block holds the
    largest k of its rows)."""
    __slots__ = ("block", "row", "decode_step", "query_pos", "top_k")

    def __init__(self, block: Block, row: int, decode_step: int, query_pos: int, top_k: int) -> None:
        self.block = block
        self.row = row
        self.decode_step = decode_step
        self.query_pos = query_pos
        self.top_k = top_k

    def __reduce__(self) -> tuple[Any, ...]:  # a few numbers and the (memoized) block
        return (RowRef, (self.block, self.row, self.decode_step, self.query_pos, self.top_k))

    def get(self, key: str) -> np.ndarray | None:
        """This row's array ``key`` (its own top-k) in its ``FIELDS`` dtype: a view where the
        block already has it; None if the block has no such array."""
        arr = self.block.row(key, self.row, self.top_k)
        return None if arr is None else arr.astype(FIELDS[key], copy=False)

    def own(self, mode: str) -> None:
        """Copy this row's arrays of ``mode`` (on the host) out of its block, so the block can go."""
        blk = self.block
        if blk.owned:
            return
        assert blk.on_host, "own a row once its block is on the host (payload.blocks_to_host)"
        keys = MODE_FIELDS[mode] + (MOE_FIELDS if blk.moe_layers else ())
        arrays = {k: v[None].copy() for k in keys if (v := blk.row(k, self.row, self.top_k)) is not None}
        one = Block(blk.layers, moe_layers=blk.moe_layers, head=blk.head, arrays=arrays, on_host=True, owned=True)
        one.set_hints([blk.hint(self.row)])
        self.block, self.row = one, 0


class Payload(NamedTuple):
    """A request's capture in one output: its rows, and what the entries need of its params."""
    mode: str
    top_k: int
    mask_prefix: int
    fingerprint_version: int
    rows: list[RowRef]


def merge_owned(rows: list[RowRef]) -> None:
    """Rows that own their copies point into one block per kind instead: the [steps, ...]
    arrays of a request that sends all its rows at once (non-streaming), a few arrays in the
    message rather than a few per step."""
    by_kind: dict[tuple[Any, ...], list[RowRef]] = {}
    for r in rows:
        if r.block.owned:
            by_kind.setdefault(r.block.kind(), []).append(r)
    for group in by_kind.values():
        if len(group) < 2:
            continue
        b0 = group[0].block
        one = Block(b0.layers, moe_layers=b0.moe_layers, head=b0.head, on_host=True, owned=True,
                    arrays={k: np.concatenate([r.block.arrays[k][r.row, None] for r in group]) for k in b0.arrays})
        one.set_hints([r.block.hint(r.row) for r in group])
        for i, r in enumerate(group):
            r.block, r.row = one, i
