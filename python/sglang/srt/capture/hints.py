"""Manifold hints: cluster centroids and sampling hints from a sidecar, refreshed in the background.

A daemon thread GETs ``{url}/centroids`` (both ``rapids_sidecar.py`` and
``python -m sglang.srt.attention_sidecar`` serve it) every ``interval`` seconds and swaps in
an immutable snapshot; the decode path only reads the current snapshot. A sidecar that
is down is logged once (and once more when it comes back); capture goes on with the
rule-based zones.

Assignment: the nearest centroid in Euclidean distance; when the sidecar reports a
cluster radius, a fingerprint farther than ``ASSIGN_FACTOR`` x radius from every centroid
is noise (cluster -1), as the sidecars themselves assign.

Versions: the centroids are means of fingerprints of one version, which ``/centroids`` says in
``fingerprint_version`` (1 when it does not: a sidecar from before versions). Only fingerprints
of that version are assigned; a row of another version gets -1 (no hint), since distances
between fingerprints of different definitions mean nothing.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sgl_kernel import zones

logger = logging.getLogger(__name__)
ASSIGN_FACTOR = 2.0


@dataclass(frozen=True)
class Snapshot:
    ids: list[int]
    centroids: torch.Tensor  # [K, 20] float32 on the scheduler's device
    radii: torch.Tensor  # [K] (inf where unknown)
    zones: list[str]
    hints: list[dict[str, float]]
    version: int = 1  # fingerprint version of the centroids

    @property
    def empty(self) -> bool:
        return not self.ids


def centroids_version(body: dict[str, Any]) -> int:
    """The fingerprint version of a ``/centroids`` answer (1 when it does not say; null is said
    by a sidecar that has no clusters yet); ValueError for a version this engine does not know."""
    v = body.get("fingerprint_version")
    if v is None:
        return 1
    if type(v) is not int or v not in zones.FINGERPRINT_VERSIONS:
        raise ValueError(f"fingerprint_version {v!r} is not one of {list(zones.FINGERPRINT_VERSIONS)}")
    return v


def parse_centroids(body: dict[str, Any], device: torch.device) -> Snapshot:
    version = centroids_version(body)
    ids, cents, radii, zs, hints = [], [], [], [], []
    for c in body.get("clusters", []):
        v = zones.validate_fingerprint(c["centroid"])
        ids.append(int(c["cluster_id"]))
        cents.append(v)
        r = c.get("radius")
        radii.append(float(r) if isinstance(r, (int, float)) and r > 0 else float("inf"))
        zs.append(str(c.get("zone") or zones.classify(v, version).zone))
        h = c.get("sampling_hints") or zones.sampling_hints(v, version)
        hints.append({"temperature": float(h["temperature"]), "top_p": float(h["top_p"])})
    cent = torch.tensor(np.array(cents, dtype=np.float32).reshape(-1, zones.FINGERPRINT_DIM), device=device)
    return Snapshot(ids, cent, torch.tensor(radii, dtype=torch.float32, device=device), zs, hints, version)


class HintsClient:
    def __init__(self, url: str, interval: float, device: torch.device) -> None:
        self.url = url.rstrip("/") + "/centroids"
        self.interval = interval
        self.device = device
        self.snapshot: Snapshot | None = None
        self.refreshes = 0
        self._ok: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="manifold-hints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh_once()
            self._stop.wait(self.interval)

    def refresh_once(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                snap = parse_centroids(json.loads(r.read()), self.device)
        except Exception as e:  # any failure keeps the previous snapshot
            if self._ok is not False:
                logger.warning("manifold hints: %s unreachable or invalid (%s); using rule-based zones", self.url, e)
            self._ok = False
            return
        if self._ok is False:
            logger.info("manifold hints: %s is back (%d clusters)", self.url, len(snap.ids))
        self._ok = True
        self.snapshot = snap
        self.refreshes += 1

    def assign(self, fp: torch.Tensor, version: torch.Tensor | None = None) -> tuple[torch.Tensor, Snapshot] | None:
        """Cluster index (into the snapshot, -1 = noise or no hint) of each row of fp [N, 20], on
        the device. ``version`` [N]: each row's fingerprint version; rows of a version other than
        the centroids' get -1 (None: every row is taken to be of the centroids' version)."""
        snap = self.snapshot
        if snap is None or snap.empty:
            return None
        d = torch.cdist(fp.float().reshape(-1, zones.FINGERPRINT_DIM), snap.centroids)
        dist, idx = d.min(dim=1)
        ok = dist <= ASSIGN_FACTOR * snap.radii[idx]
        if version is not None:  # a device comparison: no host sync
            ok &= version.reshape(-1).to(idx.device) == snap.version
        idx = torch.where(ok, idx, torch.full_like(idx, -1))
        return idx, snap

    def close(self) -> None:
        self._stop.set()
