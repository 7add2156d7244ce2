"""A step's capture results on their way out: blocks of rows, moved to the host once per
step, then packed per request into compact numpy arrays for the trip to the front end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sglang.srt.managers.io_struct import CaptureParams


# Which block arrays a record of each mode keeps (moe_ids / moe_w go with every mode).
_TOPK = ("topk_pos", "topk_prob", "topk_logit")
MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "raw": (*_TOPK, "lse_ref", "masked_mass"),
    "sketch": (*_TOPK, "lse_ref", "masked_mass", "hist", "entropy"),
    "fingerprint": ("fingerprint", "cluster_idx"),
}


@dataclass
class CaptureBlock:
    """One forward's capture results for the rows of one head group that share a layer
    list: every array is [rows, ...] (layers second where there are layers). Records point
    at a block and a row until the step's results reach the host together."""
    layers: list[int]
    arrays: dict[str, Any]  # name -> device tensor, then a host numpy array
    moe_layers: list[int] = field(default_factory=list)
    snapshot: Any = None  # the hints snapshot that cluster_idx indexes
    on_host: bool = False


def blocks_to_host(blocks: list[CaptureBlock]) -> None:
    """Turn every array of these blocks into numpy with one device-to-host copy per dtype
    (a handful of blocks per step, not one copy per request and field). Called after the
    step's sampling, whose token ids already waited for the device."""
    todo = [b for b in blocks if not b.on_host]
    slots: dict[torch.dtype, list[tuple[CaptureBlock, str, torch.Tensor]]] = {}
    for blk in todo:
        for key, t in blk.arrays.items():
            t = t.detach()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()  # numpy has no bfloat16
            if t.device.type == "cpu":
                blk.arrays[key] = t.numpy()
            else:
                slots.setdefault(t.dtype, []).append((blk, key, t))
        blk.on_host = True
    for group in slots.values():
        flat = torch.cat([t.reshape(-1) for _, _, t in group]).cpu().numpy()
        offsets = np.cumsum([t.numel() for _, _, t in group])[:-1]
        for (blk, key, t), part in zip(group, np.split(flat, offsets)):
            blk.arrays[key] = part.reshape(tuple(t.shape))


def resolve_records(recs: list[dict[str, Any]]) -> None:
    """Give each record its own rows of its block's arrays (the fields of its mode), as
    small numpy copies, so a long request keeps only its own rows and not whole batches.
    Blocks still on the device are moved first; resolved records are left alone."""
    blocks_to_host(list({id(r["_block"]): r["_block"] for r in recs if "_block" in r}.values()))
    for rec in recs:
        blk = rec.pop("_block", None)
        if blk is None:
            continue
        j, k, mode = rec.pop("_row"), rec.pop("_top_k"), rec.pop("_mode")
        for key in MODE_FIELDS[mode]:
            arr = blk.arrays.get(key)
            if arr is not None:
                rec[key] = (arr[j, :, :k] if key in _TOPK else arr[j]).copy()
        if "cluster_idx" in rec:  # decode steps only (the hints describe generation)
            idx = int(rec.pop("cluster_idx"))
            if rec["decode_step"] is not None:
                rec["cluster"] = (idx, blk.snapshot)
        if blk.moe_layers:
            rec["moe_layers"] = blk.moe_layers
            rec["moe_ids"], rec["moe_w"] = blk.arrays["moe_ids"][j].copy(), blk.arrays["moe_w"][j].copy()


def _stack(recs: list[dict[str, Any]], key: str, dtype: Any) -> np.ndarray:
    if len(recs) == 1:  # a streaming step: a view, not np.stack's copy (4x cheaper per field)
        return recs[0][key][None].astype(dtype, copy=False)
    return np.stack([r[key] for r in recs]).astype(dtype, copy=False)


def pack_records(p: CaptureParams, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One request's records (resolved, see resolve_records) as [steps, ...] arrays."""
    resolve_records(recs)
    out: dict[str, Any] = {
        "mode": p.mode,
        "top_k": p.top_k,
        "layers": list(recs[0]["layers"]),
        "mask_prefix": p.mask_prefix,
        "decode_step": np.array([-1 if r["decode_step"] is None else r["decode_step"] for r in recs], np.int64),
        "query_pos": np.array([r["query_pos"] for r in recs], np.int64),
    }
    if p.mode != "fingerprint":
        out["topk_pos"] = _stack(recs, "topk_pos", np.int32)
        out["topk_prob"] = _stack(recs, "topk_prob", np.float32)
        out["topk_logit"] = _stack(recs, "topk_logit", np.float32)
        out["lse_ref"] = _stack(recs, "lse_ref", np.float32)
        out["masked_mass"] = _stack(recs, "masked_mass", np.float32)
    if p.mode == "sketch":
        out["hist"] = _stack(recs, "hist", np.float32)
        out["entropy"] = _stack(recs, "entropy", np.float32)
    if p.mode == "fingerprint":
        out["fingerprint"] = _stack(recs, "fingerprint", np.float32)
        if any("cluster" in r for r in recs):
            ids, zs = [], []
            for r in recs:
                if "cluster" not in r:
                    ids.append(None)
                    zs.append(None)
                    continue
                i = int(r["cluster"][0])
                snap = r["cluster"][1]
                ids.append(snap.ids[i] if i >= 0 else -1)
                zs.append(snap.zones[i] if i >= 0 else None)
            out["cluster_id"], out["cluster_zone"] = ids, zs
    moe = recs[0].get("moe_layers")
    if moe and all(r.get("moe_layers") == moe for r in recs):
        out["moe_layers"] = list(moe)
        out["moe_ids"] = _stack(recs, "moe_ids", np.int64)
        out["moe_w"] = _stack(recs, "moe_w", np.float32)
    return out
