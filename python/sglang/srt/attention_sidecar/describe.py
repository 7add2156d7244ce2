"""Zone, traits and sampling hints of one fingerprint: a thin view over ``sgl_kernel.zones``.

All thresholds and rules live in ``sgl_kernel.zones``; this only shapes its answers into the
JSON the sidecars return, so ``/predict`` (rapids sidecar) and ``/classify`` (this package)
describe a fingerprint identically.
"""
from __future__ import annotations

from typing import Any, Sequence

from sgl_kernel import zones


def describe(fp: Sequence[float], version: int = 1) -> dict[str, Any]:
    """``zone``, ``zone_confidence``, ``traits`` and ``sampling_hints`` of a fingerprint of
    ``version`` (``sgl_kernel.zones.FINGERPRINT_VERSIONS``; 1 for data that does not say): each
    version is read with its own thresholds."""
    r = zones.classify(fp, version)
    hints = zones.sampling_hints(fp, version)
    return {
        "zone": r.zone,
        "zone_confidence": r.confidence,
        "traits": zones.traits(fp, version),
        "sampling_hints": {"temperature": hints["temperature"], "top_p": hints["top_p"],
                           "capture_mode": hints["capture_mode"]},
    }
