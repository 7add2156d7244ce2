"""Turn a packed capture payload into the JSON entries of the API (runs in the front end).

numpy only: no model or kernel code. Entry formats are documented in docs/attention_api.md.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgl_kernel import zones
from sglang.srt.capture.wire import RowRefs, unpack


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def _moe(payload: dict[str, Any], s: int, layers: list[int]) -> dict[str, Any] | None:
    if "moe_layers" not in payload:
        return None
    out = {}
    for li, l in enumerate(payload["moe_layers"]):
        if l in layers:
            out[str(l)] = {"experts": payload["moe_ids"][s, li].tolist(),
                           "weights": [_r(w) for w in payload["moe_w"][s, li]]}
    return out or None


def _raw(payload: dict[str, Any], s: int, li: int, layer: int, base: dict[str, Any]) -> dict[str, Any]:
    k = payload["top_k"]
    pos = payload["topk_pos"][s, li, :k]
    valid = pos >= 0
    pos = pos[valid]
    prob = payload["topk_prob"][s, li, :k][valid].astype(np.float64)
    logit = payload["topk_logit"][s, li, :k][valid]
    total = float(prob.sum())
    e = dict(base)
    if "head_id" in payload and payload["head_id"][s] >= 0:
        e["head_id"] = int(payload["head_id"][s])
    e.update({
        "layer_id": layer,
        "token_positions": pos.tolist(),
        "attention_scores": [_r(p / total) if total > 0 else 0.0 for p in prob],
        "topk_logits": [float(x) for x in logit],
        "logsumexp_candidates": float(payload["lse_ref"][s, li]),
    })
    if payload["mask_prefix"]:
        e["masked_mass"] = _r(payload["masked_mass"][s, li])
    if "sink_mass" in payload:
        e["sink_mass"] = _r(payload["sink_mass"][s, li])
    moe = _moe(payload, s, [layer])
    if moe:
        e["moe_routing"] = moe
    return e


def build_entries(payload: dict[str, Any] | RowRefs, prompt_len: int) -> list[dict[str, Any]]:
    payload = unpack(payload)
    mode, layers = payload["mode"], payload["layers"]
    version = int(payload.get("fingerprint_version", 1))  # packed before versions existed: 1
    entries: list[dict[str, Any]] = []
    for s in range(len(payload["decode_step"])):
        step = int(payload["decode_step"][s])
        base: dict[str, Any] = {"decode_step": step if step >= 0 else None,
                                "query_position": int(payload["query_pos"][s]), "fingerprint_version": version}
        if step < 0:
            base["prompt"] = True
        if mode == "raw" or step < 0:  # prompt-attention entries are raw entries
            if "topk_pos" not in payload:
                continue
            entries += [_raw(payload, s, li, l, base) for li, l in enumerate(layers)]
        elif mode == "sketch":
            k = payload["top_k"]
            sketches = {}
            for li, l in enumerate(layers):
                pos = payload["topk_pos"][s, li]
                prob = payload["topk_prob"][s, li]
                valid = pos >= 0
                sk = {
                    "top_hubs": [[int(p), _r(q)] for p, q in zip(pos[valid], prob[valid])],
                    "dist_hist": [_r(h) for h in payload["hist"][s, li]],
                    "entropy": _r(payload["entropy"][s, li]),
                    "mass_captured": _r(prob[valid][:k].sum()),
                }
                if payload["mask_prefix"]:
                    sk["masked_mass"] = _r(payload["masked_mass"][s, li])
                if "sink_mass" in payload:
                    sk["sink_mass"] = _r(payload["sink_mass"][s, li])
                sketches[str(l)] = sk
            e = {"mode": "sketch", **base, "layer_sketches": sketches}
            moe = _moe(payload, s, layers)
            if moe:
                e["moe_routing"] = moe
            entries.append(e)
        else:
            fp = payload["fingerprint"][s].astype(np.float64)
            if not np.all(np.isfinite(fp)):
                fp = np.nan_to_num(fp)
            z = zones.classify(fp, version)
            e = {"mode": "fingerprint", **base, "step": step, "fingerprint": [_r(x) for x in fp],
                 "manifold": z.zone, "manifold_confidence": z.confidence, "layers": layers}
            if "sink_mass" in payload:  # the mean over the layers, like the fingerprint
                e["sink_mass"] = _r(payload["sink_mass"][s].mean())
            if payload.get("cluster_id") is not None and payload["cluster_id"][s] is not None:
                e["cluster_id"] = payload["cluster_id"][s]  # from the sidecar's centroids (-1 = noise)
                e["cluster_zone"] = payload["cluster_zone"][s]
            moe = _moe(payload, s, layers)
            if moe:
                e["moe_routing"] = moe
            entries.append(e)
    return entries


def true_probabilities(entry: dict[str, Any]) -> list[float]:
    """exp(topk_logits - logsumexp_candidates): the exact attention probabilities."""
    return [math.exp(x - entry["logsumexp_candidates"]) for x in entry["topk_logits"]]
