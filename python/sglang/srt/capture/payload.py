"""Pack a request's capture records into compact numpy arrays for the trip to the front end."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sglang.srt.managers.io_struct import CaptureParams


def records_to_host(recs: list[dict[str, Any]]) -> None:
    """Move every device tensor of these records to the host with one copy per dtype.

    Called once per step after sampling (whose token ids already waited for the device),
    so a batch of B capturing requests costs one or two small transfers instead of B
    synchronising copies when each request's payload is packed. Records already on the
    host are left alone; on a CPU device nothing happens."""
    slots: list[tuple[Any, Any, torch.Tensor]] = []  # (container, key, tensor)
    for r in recs:
        for k, v in r.items():
            if isinstance(v, torch.Tensor) and v.device.type != "cpu":
                slots.append((r, k, v))
            elif k == "cluster" and isinstance(v[0], torch.Tensor) and v[0].device.type != "cpu":
                r[k] = list(v)  # (index tensor, snapshot): the index moves
                slots.append((r[k], 0, v[0]))
            elif k == "moe":
                for layer, pair in v.items():
                    if isinstance(pair[0], torch.Tensor) and pair[0].device.type != "cpu":
                        v[layer] = list(pair)
                        slots += [(v[layer], 0, pair[0]), (v[layer], 1, pair[1])]
    by_dtype: dict[torch.dtype, list[tuple[Any, Any, torch.Tensor]]] = {}
    for slot in slots:
        by_dtype.setdefault(slot[2].dtype, []).append(slot)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for _, _, t in group]).cpu()
        for (box, key, t), part in zip(group, flat.split([t.numel() for _, _, t in group])):
            box[key] = part.view(t.shape)


def _stack(recs: list[dict[str, Any]], key: str, dtype: Any) -> np.ndarray:
    return torch.stack([r[key] for r in recs]).detach().cpu().numpy().astype(dtype, copy=False)


def pack_records(p: CaptureParams, recs: list[dict[str, Any]], moe_layers: list[int]) -> dict[str, Any]:
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
    cap_moe = [l for l in out["layers"] if l in moe_layers and all("moe" in r and l in r["moe"] for r in recs)]
    if cap_moe:
        out["moe_layers"] = cap_moe
        out["moe_ids"] = np.stack([np.stack([r["moe"][l][0].cpu().numpy() for l in cap_moe]) for r in recs])
        out["moe_w"] = np.stack([np.stack([r["moe"][l][1].float().cpu().numpy() for l in cap_moe]) for r in recs])
    return out
