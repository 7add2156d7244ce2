"""A step's capture results on their way out of the scheduler: the step's blocks move to the
host once per step, and each request's rows of them become its payload.

Host work per captured row is a few attribute reads: see ``wire`` for the shapes (``Block``,
``RowRef``, ``Payload``) and how a streaming request's rows travel as references into the
step's shared blocks."""
from __future__ import annotations

import numpy as np
import torch

from sglang.srt.capture.wire import Block, Payload, RowRef, merge_owned
from sglang.srt.managers.io_struct import CaptureParams


def blocks_to_host(blocks: list[Block]) -> None:
    """Move each block's tensors to numpy ``arrays`` with one device-to-host copy per dtype for
    all of them (a handful of blocks per step, not one copy per request and field). Called
    after the step's sampling, whose token ids already waited for the device."""
    todo = [b for b in blocks if not b.on_host]
    out: dict[int, dict[str, np.ndarray]] = {id(b): {} for b in todo}
    slots: dict[torch.dtype, list[tuple[Block, str, torch.Tensor]]] = {}
    for blk in todo:
        for key, t in blk.tensors.items():
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
        idx = arrays.pop("cluster_idx", None)
        if idx is not None and blk.snapshot is not None:
            snap = blk.snapshot
            blk.cluster_ids = [snap.ids[i] if i >= 0 else -1 for i in idx.tolist()]
            blk.cluster_zones = [snap.zones[i] if i >= 0 else None for i in idx.tolist()]
        blk.arrays, blk.on_host = arrays, True
        blk.tensors, blk.snapshot = {}, None  # the device copies can go now


def _on_host(rows: list[RowRef]) -> None:
    """Blocks of these rows still on the device reach the host (normally after_step did it)."""
    todo = {id(b): b for r in rows if not (b := r.block).on_host}
    if todo:
        blocks_to_host(list(todo.values()))


def own_rows(rows: list[tuple[str, RowRef]]) -> None:
    """Rows (with their request's mode) that wait for a later step copy their arrays of that
    mode out of the step's blocks (moved to the host first)."""
    _on_host([r for _, r in rows])
    for mode, r in rows:
        r.own(mode)


def take_payload(p: CaptureParams, rows: list[RowRef], stream: bool) -> Payload:
    """A request's rows as what travels to the front end: references into the step's shared
    blocks for a streaming request; a request that sends later (non-streaming) sends its own
    copies, in one block per kind (``wire.merge_owned``)."""
    if stream:
        _on_host(rows)
    else:
        own_rows([(p.mode, r) for r in rows])
        merge_owned(rows)
    return Payload(p.mode, p.top_k, p.mask_prefix, p.fingerprint_version, rows)
