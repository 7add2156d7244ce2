"""A step's capture results on their way out of the scheduler: blocks of rows on the
device, moved to the host once per step, and each request's records of rows in them.

Host work per captured row is a few attribute reads: see ``wire`` for how a streaming
request's rows travel as references into the step's shared blocks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sglang.srt.capture.wire import HostBlock, Row, RowRefs, pack_rows
from sglang.srt.managers.io_struct import CaptureParams


@dataclass
class CaptureBlock:
    """One forward's capture results for the rows of one head group that share a layer
    list: every array is [rows, ...] (layers second where there are layers), on the
    device until ``blocks_to_host`` makes ``host``."""
    layers: list[int]
    arrays: dict[str, torch.Tensor]
    moe_layers: list[int] = field(default_factory=list)
    snapshot: Any = None  # the hints snapshot that arrays["cluster_idx"] indexes
    host: HostBlock | None = None
    head: int | None = None  # per-head capture: the rows' one query head


def blocks_to_host(blocks: list[CaptureBlock]) -> None:
    """Give each block its ``host`` copy with one device-to-host copy per dtype for all of
    them (a handful of blocks per step, not one copy per request and field). Called after
    the step's sampling, whose token ids already waited for the device."""
    todo = [b for b in blocks if b.host is None]
    out: dict[int, dict[str, np.ndarray]] = {id(b): {} for b in todo}
    slots: dict[torch.dtype, list[tuple[CaptureBlock, str, torch.Tensor]]] = {}
    for blk in todo:
        for key, t in blk.arrays.items():
            t = t.detach()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()  # numpy has no bfloat16
            if t.device.type == "cpu":
                out[id(blk)][key] = t.numpy()
            else:
                slots.setdefault(t.dtype, []).append((blk, key, t))
    for group in slots.values():
        flat = torch.cat([t.reshape(-1) for _, _, t in group]).cpu().numpy()
        offsets = np.cumsum([t.numel() for _, _, t in group])[:-1]
        for (blk, key, t), part in zip(group, np.split(flat, offsets)):
            out[id(blk)][key] = part.reshape(tuple(t.shape))
    for blk in todo:
        arrays = out[id(blk)]
        if "topk_pos" in arrays:  # positions fit int32: half the bytes on the wire
            arrays["topk_pos"] = arrays["topk_pos"].astype(np.int32)
        hb = HostBlock(blk.layers, arrays, blk.moe_layers, head=blk.head)
        idx = arrays.pop("cluster_idx", None)
        if idx is not None and blk.snapshot is not None:
            snap = blk.snapshot
            hb.cluster_ids = [snap.ids[i] if i >= 0 else -1 for i in idx.tolist()]
            hb.cluster_zones = [snap.zones[i] if i >= 0 else None for i in idx.tolist()]
        blk.host = hb
        blk.arrays = {}  # the device copies can go now


class Record:
    """One captured query row of a request: which step and position, and where its numbers
    are (row ``row`` of ``block``, or of ``own``: a one-row copy once it has to wait)."""
    __slots__ = ("block", "row", "decode_step", "query_pos", "top_k", "mode", "own")

    def __init__(self, block: CaptureBlock, row: int, decode_step: int | None, query_pos: int, top_k: int,
                 mode: str) -> None:
        self.block: CaptureBlock | None = block
        self.row = row
        self.decode_step = -1 if decode_step is None else decode_step  # -1: a prompt-attention row
        self.query_pos = query_pos
        self.top_k = top_k  # this request's k (a block holds the largest k of its rows)
        self.mode = mode
        self.own: HostBlock | None = None

    def ref(self) -> Row:
        """Called once the block is on the host (``_on_host``)."""
        if self.own is not None:
            return (self.own, 0, self.decode_step, self.query_pos, self.top_k)
        blk = self.block
        assert blk is not None and blk.host is not None  # the block goes only with ``own`` set
        return (blk.host, self.row, self.decode_step, self.query_pos, self.top_k)

    def own_row(self) -> None:
        """Copy this row's fields out of its block (on the host), so the block can go."""
        if self.own is None:
            blk = self.block
            assert blk is not None and blk.host is not None  # as in ref
            self.own = blk.host.own_row(self.row, self.top_k, self.mode)
            self.block = None


def _on_host(recs: list[Record]) -> None:
    """Blocks of these records still on the device reach the host (normally after_step did it)."""
    # a record has its block until it owns its row: block is None exactly when own is set
    todo = {id(b): b for r in recs if (b := r.block) is not None and b.host is None}
    if todo:
        blocks_to_host(list(todo.values()))


def own_rows(recs: list[Record]) -> None:
    """Records that wait for a later step copy their rows out (their blocks to the host first)."""
    _on_host(recs)
    for r in recs:
        r.own_row()


def take_payload(p: CaptureParams, recs: list[Record], stream: bool) -> dict[str, Any] | RowRefs:
    """A request's records as what travels to the front end: references into the step's
    shared blocks for a streaming request, packed arrays otherwise (see ``wire``)."""
    _on_host(recs)
    rows = [r.ref() for r in recs]
    if stream:
        return RowRefs(p.mode, p.top_k, p.mask_prefix, rows, p.fingerprint_version)
    return pack_rows(p.mode, p.top_k, p.mask_prefix, rows, p.fingerprint_version)
