"""How capture results travel from the scheduler to the front end (numpy only, no torch).

A decode step's results for the rows of one head group and layer list are one
``HostBlock`` of [rows, ...] arrays. A request's results are rows of such blocks:
``(block, row, decode_step, query_pos, top_k)``.

* A streaming request sends ``RowRefs``: its rows, pointing into the step's blocks. Every
  request of the step points into the same few blocks, and the step's outputs are pickled
  in one message, so each block is serialized once per step, not once per request; the
  scheduler does no per-request array work.
* A request that sends later (non-streaming) keeps copies of its own rows (one-row blocks,
  so a finished batch's blocks can go) and sends them packed (``pack_rows``).

The front end turns either into the packed dict that ``entries.build_entries`` reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np

# Which block arrays a row of each mode reads (moe_ids / moe_w go with every mode).
TOPK_FIELDS = ("topk_pos", "topk_prob", "topk_logit")
MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "raw": (*TOPK_FIELDS, "lse_ref", "masked_mass", "sink_mass"),
    "sketch": (*TOPK_FIELDS, "lse_ref", "masked_mass", "sink_mass", "hist", "entropy"),
    "fingerprint": ("fingerprint", "sink_mass"),
}
MOE_FIELDS = ("moe_ids", "moe_w")


@dataclass
class HostBlock:
    """Capture results of some rows on the host: every array is [rows, ...] (layers second
    where there are layers; top-k arrays hold the largest k of the block's rows)."""
    layers: list[int]
    arrays: dict[str, np.ndarray]
    moe_layers: list[int] = field(default_factory=list)
    # per row, from the sidecar's centroids (manifold hints): cluster id (-1 = noise) and zone
    cluster_ids: list[int] | None = None
    cluster_zones: list[str | None] | None = None
    head: int | None = None  # per-head capture: the one query head of every row (else the head mean)

    def row(self, key: str, row: int, top_k: int) -> np.ndarray | None:
        """Row ``row`` of array ``key`` (its own top-k), a view; None if the block has no such array."""
        arr = self.arrays.get(key)
        if arr is None:
            return None
        return arr[row, :, :top_k] if key in TOPK_FIELDS else arr[row]

    def own_row(self, row: int, top_k: int, mode: str) -> "HostBlock":
        """A one-row block with copies of this row's fields for ``mode``."""
        keys = MODE_FIELDS[mode] + (MOE_FIELDS if self.moe_layers else ())
        arrays = {k: v[None].copy() for k in keys if (v := self.row(k, row, top_k)) is not None}
        one = HostBlock(self.layers, arrays, self.moe_layers, head=self.head)
        if self.cluster_ids is not None:
            zones = self.cluster_zones
            assert zones is not None  # the hints set cluster_ids and cluster_zones together (payload.blocks_to_host)
            one.cluster_ids, one.cluster_zones = [self.cluster_ids[row]], [zones[row]]
        return one


Row = tuple[HostBlock, int, int, int, int]  # (block, row, decode_step or -1 for a prompt row, query_pos, top_k)


class RowRefs(NamedTuple):
    """A streaming request's capture in one output: rows of the step's shared blocks."""
    mode: str
    top_k: int
    mask_prefix: int
    rows: list[Row]
    fingerprint_version: int = 2


def pack_rows(mode: str, top_k: int, mask_prefix: int, rows: list[Row], fingerprint_version: int = 2) -> dict[str, Any]:
    """A request's rows as [steps, ...] arrays (the dict ``entries.build_entries`` reads)."""
    if len(rows) == 1:  # one step: views, not np.stack's copies
        hb0, r0, _, _, k0 = rows[0]

        def stacked(key: str, dtype: Any) -> np.ndarray:
            arr = hb0.row(key, r0, k0)
            assert arr is not None, key  # only the fields of the rows' mode are read: their blocks hold them
            return arr[None].astype(dtype, copy=False)
    else:
        def stacked(key: str, dtype: Any) -> np.ndarray:
            # only the fields of the rows' mode are read: every block of such rows holds them
            arrs = cast("list[np.ndarray]", [hb.row(key, r, k) for hb, r, _, _, k in rows])
            return np.stack(arrs).astype(dtype, copy=False)

    first = rows[0][0]
    out: dict[str, Any] = {
        "mode": mode,
        "top_k": top_k,
        "layers": list(first.layers),
        "mask_prefix": mask_prefix,
        "fingerprint_version": fingerprint_version,
        "decode_step": np.array([ds for _, _, ds, _, _ in rows], np.int64),
        "query_pos": np.array([qp for _, _, _, qp, _ in rows], np.int64),
    }
    if mode != "fingerprint":
        out["topk_pos"] = stacked("topk_pos", np.int32)
        out["topk_prob"] = stacked("topk_prob", np.float32)
        out["topk_logit"] = stacked("topk_logit", np.float32)
        out["lse_ref"] = stacked("lse_ref", np.float32)
        out["masked_mass"] = stacked("masked_mass", np.float32)
    if all("sink_mass" in hb.arrays for hb, _, _, _, _ in rows):  # [steps, layers]
        out["sink_mass"] = stacked("sink_mass", np.float32)
    if any(hb.head is not None for hb, _, _, _, _ in rows):
        out["head_id"] = np.array([-1 if hb.head is None else hb.head for hb, _, _, _, _ in rows], np.int64)
    if mode == "sketch":
        out["hist"] = stacked("hist", np.float32)
        out["entropy"] = stacked("entropy", np.float32)
    if mode == "fingerprint":
        out["fingerprint"] = stacked("fingerprint", np.float32)
        # cluster hints describe generation: decode steps only
        hinted = [hb.cluster_ids is not None and ds >= 0 for hb, _, ds, _, _ in rows]
        if any(hinted):
            # a hinted row's block has both lists (the hints set them together)
            out["cluster_id"] = [cast("list[int]", hb.cluster_ids)[r] if h else None
                                 for (hb, r, _, _, _), h in zip(rows, hinted)]
            out["cluster_zone"] = [cast("list[str | None]", hb.cluster_zones)[r] if h else None
                                   for (hb, r, _, _, _), h in zip(rows, hinted)]
    moe = first.moe_layers
    if moe and all(hb.moe_layers == moe for hb, _, _, _, _ in rows):
        out["moe_layers"] = list(moe)
        out["moe_ids"] = stacked("moe_ids", np.int64)
        out["moe_w"] = stacked("moe_w", np.float32)
    return out


def unpack(payload: dict[str, Any] | RowRefs) -> dict[str, Any]:
    """The packed dict of either form a request's capture travels in."""
    if isinstance(payload, RowRefs):
        return pack_rows(*payload)
    return payload
