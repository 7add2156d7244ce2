"""Turn a capture payload's rows into the JSON entries of the API (runs in the front end).

numpy only: no model or kernel code. Entry formats are documented in docs/attention_api.md.
Each row reads the arrays its mode carries (``wire.MODE_FIELDS``; a prompt row, the raw ones).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgl_kernel import zones
from sglang.srt.capture.wire import MODE_FIELDS, MOE_FIELDS, Payload, RowRef


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def _arrays(row: RowRef, mode: str) -> dict[str, np.ndarray]:
    """The row's arrays of ``mode`` (and MoE routing) that its block has."""
    keys = MODE_FIELDS[mode] + (MOE_FIELDS if row.block.moe_layers else ())
    return {k: v for k in keys if (v := row.get(k)) is not None}


def _moe(row: RowRef, a: dict[str, np.ndarray], layers: list[int]) -> dict[str, Any] | None:
    if "moe_ids" not in a:
        return None
    out = {}
    for li, l in enumerate(row.block.moe_layers):
        if l in layers:
            out[str(l)] = {"experts": a["moe_ids"][li].tolist(), "weights": [_r(w) for w in a["moe_w"][li]]}
    return out or None


def _raw(p: Payload, row: RowRef, a: dict[str, np.ndarray], li: int, layer: int,
         base: dict[str, Any]) -> dict[str, Any]:
    k = p.top_k
    pos = a["topk_pos"][li, :k]
    valid = pos >= 0
    pos = pos[valid]
    prob = a["topk_prob"][li, :k][valid].astype(np.float64)
    logit = a["topk_logit"][li, :k][valid]
    total = float(prob.sum())
    e = dict(base)
    if row.block.head is not None:
        e["head_id"] = row.block.head
    e.update({
        "layer_id": layer,
        "token_positions": pos.tolist(),
        "attention_scores": [_r(q / total) if total > 0 else 0.0 for q in prob],
        "topk_logits": [float(x) for x in logit],
        "logsumexp_candidates": float(a["lse_ref"][li]),
    })
    if p.mask_prefix:
        e["masked_mass"] = _r(a["masked_mass"][li])
    if "sink_mass" in a:
        e["sink_mass"] = _r(a["sink_mass"][li])
    moe = _moe(row, a, [layer])
    if moe:
        e["moe_routing"] = moe
    return e


def build_entries(payload: Payload, prompt_len: int) -> list[dict[str, Any]]:
    p, mode, version = payload, payload.mode, payload.fingerprint_version
    entries: list[dict[str, Any]] = []
    for row in payload.rows:
        step, layers = row.decode_step, list(row.block.layers)
        base: dict[str, Any] = {"decode_step": step if step >= 0 else None,
                                "query_position": row.query_pos, "fingerprint_version": version}
        if step < 0:
            base["prompt"] = True
        if mode == "raw" or step < 0:  # prompt-attention entries are raw entries
            if "topk_pos" not in MODE_FIELDS[mode]:  # (a fingerprint request's prompt rows have none)
                continue
            a = _arrays(row, "raw")
            entries += [_raw(p, row, a, li, l, base) for li, l in enumerate(layers)]
        elif mode == "sketch":
            a = _arrays(row, mode)
            sketches = {}
            for li, l in enumerate(layers):
                pos = a["topk_pos"][li]
                prob = a["topk_prob"][li]
                valid = pos >= 0
                sk = {
                    "top_hubs": [[int(q), _r(w)] for q, w in zip(pos[valid], prob[valid])],
                    "dist_hist": [_r(h) for h in a["hist"][li]],
                    "entropy": _r(a["entropy"][li]),
                    "mass_captured": _r(prob[valid][:p.top_k].sum()),
                }
                if p.mask_prefix:
                    sk["masked_mass"] = _r(a["masked_mass"][li])
                if "sink_mass" in a:
                    sk["sink_mass"] = _r(a["sink_mass"][li])
                sketches[str(l)] = sk
            e = {"mode": "sketch", **base, "layer_sketches": sketches}
            moe = _moe(row, a, layers)
            if moe:
                e["moe_routing"] = moe
            entries.append(e)
        else:
            a = _arrays(row, mode)
            fp = a["fingerprint"].astype(np.float64)
            if not np.all(np.isfinite(fp)):
                fp = np.nan_to_num(fp)
            z = zones.classify(fp, version)
            e = {"mode": "fingerprint", **base, "step": step, "fingerprint": [_r(x) for x in fp],
                 "manifold": z.zone, "manifold_confidence": z.confidence, "layers": layers}
            if "sink_mass" in a:  # the mean over the layers, like the fingerprint
                e["sink_mass"] = _r(a["sink_mass"].mean())
            hint = row.block.hint(row.row)  # cluster hints describe generation: decode rows only
            if hint is not None:
                e["cluster_id"], e["cluster_zone"] = hint  # from the sidecar's centroids (-1 = noise)
            moe = _moe(row, a, layers)
            if moe:
                e["moe_routing"] = moe
            entries.append(e)
    return entries


def true_probabilities(entry: dict[str, Any]) -> list[float]:
    """exp(topk_logits - logsumexp_candidates): the exact attention probabilities."""
    return [math.exp(x - entry["logsumexp_candidates"]) for x in entry["topk_logits"]]
