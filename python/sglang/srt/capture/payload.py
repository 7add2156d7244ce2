"""Pack a request's capture records into compact numpy arrays for the trip to the front end."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sglang.srt.managers.io_struct import CaptureParams


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
