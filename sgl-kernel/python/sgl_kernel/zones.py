"""Fingerprint layout, zone classification, traits and sampling hints.

This is the single source of truth for how a 20-float attention fingerprint is read.
It is pure Python + numpy (no torch) so that the sidecars and the discovery pipeline
can import it cheaply; the dashboard's TypeScript copy is tested against the JSON
vectors written by ``python -m sgl_kernel.zones --write-vectors``.

Fingerprint layout (docs/architecture.md#fingerprint):

    [0]     local mass   (distance d < 8,           histogram bins 0..2)
    [1]     mid mass     (8 <= d < 256,             histogram bins 3..7)
    [2]     long mass    (d >= 256,                 histogram bins 8..15)
    [3]     entropy / ln(|W|) in [0, 1]  (0 when |W| == 1)
    [4:20]  16-bin log-distance histogram: bin 0 = d in {0, 1},
            bin b = [2^b, 2^(b+1)) for 1 <= b <= 14, bin 15 = d >= 32768

Zones and their thresholds (a zone "fires" when its signal reaches its threshold):

    syntax_floor      local mass  >= 0.60
    semantic_bridge   mid mass    >= 0.40
    long_range        long mass   >= 0.30
    structure_ripple  ripple      >= 0.35   (mass of secondary histogram peaks, below)
    diffuse           entropy     >= 0.70   (normalized entropy, fingerprint[3])

diffuse takes precedence: attention spread evenly over many keys necessarily puts most of
its mass in the far log-distance bins, so when the normalized entropy reaches 0.70 the
zone is diffuse, with confidence ``0.5 + 0.5 * (entropy - 0.70) / 0.30``. Otherwise each
of the other four zones scores signal / threshold, the zone is the one with the largest
score (ties broken in the order above), and the confidence is
``min(1, best) * (best - second) / best``: 1 when one zone fires clearly and no other comes
close, near 0 when two zones tie or nothing fires. "ripple" is the share of histogram mass that sits in local maxima other
than the global maximum, where a local maximum must be separated from the global one by
at least one strictly lower bin: attention that comes back in several separated distance
bands (code indentation, list items, table rows) is what structure_ripple means.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

FINGERPRINT_DIM = 20
# Fingerprint versions (docs/architecture.md#fingerprint-version-2): 1 = the original
# definition over every unmasked key; 2 = sink-aware, the default: the histogram, its
# masses and the entropy describe the keys outside the attention sink, renormalized.
FINGERPRINT_VERSIONS = (1, 2)
DEFAULT_FINGERPRINT_VERSION = 2
N_HIST_BINS = 16
LOCAL_BINS = slice(0, 3)  # d < 8
MID_BINS = slice(3, 8)  # 8 <= d < 256
LONG_BINS = slice(8, 16)  # d >= 256

ZONES: tuple[str, ...] = ("syntax_floor", "semantic_bridge", "long_range", "structure_ripple", "diffuse")
THRESHOLDS: dict[str, float] = {  # version 1 (the spec's)
    "syntax_floor": 0.60,
    "semantic_bridge": 0.40,
    "long_range": 0.30,
    "structure_ripple": 0.35,
    "diffuse": 0.70,
}
# Trait thresholds: traits are not exclusive, a fingerprint can carry several.
FOCUSED_ENTROPY = 0.35
# Version 2 (sink-aware) fingerprints read with their own thresholds, re-derived from 2,016
# real fingerprints of the default model (22 varied prompts, last and auto layers): each
# zone fires for the top fifth of steps on its signal, diffuse for the top tenth of the
# entropy, focused for the bottom tenth (python -m sglang.calibrate_zones;
# benchmarks/results/zone_calibration.json; docs/attention_api.md#fingerprint-versions).
THRESHOLDS_V2: dict[str, float] = {
    "syntax_floor": 0.67,
    "semantic_bridge": 0.52,
    "long_range": 0.20,
    "structure_ripple": 0.35,
    "diffuse": 0.63,
}
FOCUSED_ENTROPY_V2 = 0.43


def thresholds(version: int = 1) -> tuple[dict[str, float], float]:
    """(zone thresholds, focused-entropy threshold) for fingerprints of ``version``."""
    if version == 1:
        return THRESHOLDS, FOCUSED_ENTROPY
    if version == 2:
        return THRESHOLDS_V2, FOCUSED_ENTROPY_V2
    raise ValueError(f"fingerprint version must be one of {list(FINGERPRINT_VERSIONS)}, got {version!r}")

# Sampling hints per zone (temperature, top_p) and why:
SAMPLING_HINTS: dict[str, dict[str, float]] = {
    # local syntax work: the next token is nearly determined by its neighbours
    "syntax_floor": {"temperature": 0.3, "top_p": 0.90},
    # paragraph-level reasoning: keep some diversity, stay on topic
    "semantic_bridge": {"temperature": 0.7, "top_p": 0.95},
    # retrieval from far context: copying facts, so be conservative
    "long_range": {"temperature": 0.5, "top_p": 0.90},
    # periodic structure (code, lists, tables): the format must be kept exactly
    "structure_ripple": {"temperature": 0.2, "top_p": 0.85},
    # no clear pattern: the model is exploring, allow it
    "diffuse": {"temperature": 0.9, "top_p": 0.98},
}
CAPTURE_MODE_HINTS: dict[str, str] = {
    "syntax_floor": "fingerprint",
    "semantic_bridge": "sketch",
    "long_range": "raw",
    "structure_ripple": "sketch",
    "diffuse": "fingerprint",
}


def bin_of_distance(d: int) -> int:
    """Histogram bin of a query-key distance d >= 0."""
    if d <= 1:
        return 0
    return min(int(math.floor(math.log2(d))), N_HIST_BINS - 1)


def fingerprint_from_hist(hist: Sequence[float], entropy_norm: float) -> np.ndarray:
    """Build the 20-float fingerprint from a 16-bin histogram and a normalized entropy."""
    h = np.asarray(hist, dtype=np.float64).reshape(N_HIST_BINS)
    fp = np.zeros(FINGERPRINT_DIM, dtype=np.float64)
    fp[0] = h[LOCAL_BINS].sum()
    fp[1] = h[MID_BINS].sum()
    fp[2] = h[LONG_BINS].sum()
    fp[3] = entropy_norm
    fp[4:] = h
    return fp


def ripple(hist: Sequence[float]) -> float:
    """Mass of histogram peaks separated from the global peak by a strictly lower bin."""
    h = np.asarray(hist, dtype=np.float64)
    total = float(h.sum())
    if total <= 0:
        return 0.0
    g = int(np.argmax(h))
    mass = 0.0
    for i in range(len(h)):
        if i == g or h[i] <= 0:
            continue
        left = h[i - 1] if i > 0 else -1.0
        right = h[i + 1] if i + 1 < len(h) else -1.0
        if h[i] < left or h[i] < right:
            continue  # not a local maximum
        lo, hi = (i, g) if i < g else (g, i)
        between = h[lo + 1 : hi]
        if between.size and float(between.min()) < h[i]:
            mass += float(h[i])
    return mass / total


@dataclass
class ZoneResult:
    zone: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"zone": self.zone, "confidence": self.confidence, "scores": self.scores}


def signals(fp: Sequence[float]) -> dict[str, float]:
    """The five signals the zones are defined on."""
    v = validate_fingerprint(fp)
    return {
        "syntax_floor": float(v[0]),
        "semantic_bridge": float(v[1]),
        "long_range": float(v[2]),
        "structure_ripple": ripple(v[4:]),
        "diffuse": float(v[3]),
    }


def classify(fp: Sequence[float], version: int = 1) -> ZoneResult:
    """Zone of one fingerprint of ``version`` (1 for data that does not say), with a
    confidence in [0, 1]."""
    th, _ = thresholds(version)
    sig = signals(fp)
    scores = {z: sig[z] / th[z] for z in ZONES}
    rounded = {z: round(s, 6) for z, s in scores.items()}
    t = th["diffuse"]
    if sig["diffuse"] >= t:
        conf = 0.5 + 0.5 * min(1.0, (sig["diffuse"] - t) / (1.0 - t))
        return ZoneResult("diffuse", round(conf, 6), rounded)
    order = sorted(ZONES[:4], key=lambda z: (-scores[z], ZONES.index(z)))
    best, second = scores[order[0]], scores[order[1]]
    conf = 0.0 if best <= 0 else min(1.0, best) * (best - second) / best
    return ZoneResult(order[0], round(float(conf), 6), rounded)


def traits(fp: Sequence[float], version: int = 1) -> list[str]:
    """Non-exclusive behavioural traits of a fingerprint (used by the sidecars)."""
    th, focused = thresholds(version)
    sig = signals(fp)
    out: list[str] = []
    if sig["syntax_floor"] >= th["syntax_floor"]:
        out += ["syntax_floor", "local_attention"]
    if sig["semantic_bridge"] >= th["semantic_bridge"]:
        out += ["semantic_bridge", "retrieval_heavy"]
    if sig["long_range"] >= th["long_range"]:
        out += ["long_range", "context_aware"]
    if sig["diffuse"] >= th["diffuse"]:
        out.append("diffuse")
    elif sig["diffuse"] <= focused:
        out.append("focused")
    if sig["structure_ripple"] >= th["structure_ripple"]:
        out.append("periodic")
    return out


def sampling_hints(fp: Sequence[float], version: int = 1) -> dict[str, float | str]:
    """Temperature / top_p (and a capture mode) suggested by the fingerprint's zone."""
    zone = classify(fp, version).zone
    return {**SAMPLING_HINTS[zone], "capture_mode": CAPTURE_MODE_HINTS[zone], "zone": zone}


def validate_fingerprint(fp: Iterable[float]) -> np.ndarray:
    """Return the fingerprint as float64[20], or raise ValueError naming the problem."""
    try:
        v = np.asarray(list(fp), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"fingerprint must be a list of {FINGERPRINT_DIM} numbers: {e}") from None
    if v.shape != (FINGERPRINT_DIM,):
        raise ValueError(f"fingerprint must have {FINGERPRINT_DIM} values, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError("fingerprint contains NaN or infinity")
    return v


def _test_vectors(version: int = 1) -> list[dict]:
    """Hand-picked fingerprints covering every zone, ties and edge cases, read as ``version``."""
    rng = np.random.default_rng(0)
    cases: list[tuple[str, np.ndarray, float]] = []

    def hist(**bins: float) -> np.ndarray:
        h = np.zeros(N_HIST_BINS)
        for k, val in bins.items():
            h[int(k[1:])] = val
        return h / h.sum()

    cases.append(("pure_local", hist(b0=0.8, b1=0.15, b2=0.05), 0.2))
    cases.append(("mid_heavy", hist(b0=0.1, b4=0.5, b6=0.4), 0.4))
    cases.append(("long_heavy", hist(b0=0.3, b9=0.4, b12=0.3), 0.3))
    cases.append(("ripple", hist(b0=0.3, b2=0.02, b3=0.25, b5=0.01, b6=0.22, b8=0.01, b9=0.19), 0.45))
    cases.append(("diffuse", np.full(N_HIST_BINS, 1 / 16), 0.95))
    cases.append(("nothing_fires", hist(b0=0.3, b4=0.3, b9=0.25, b10=0.15), 0.5))
    if version == 2:  # between the two versions' thresholds
        cases.append(("v2_local", hist(b0=0.5, b1=0.15, b2=0.05, b4=0.3), 0.3))
        cases.append(("v2_long", hist(b0=0.4, b3=0.35, b9=0.25), 0.5))
        cases.append(("v2_diffuse", np.full(N_HIST_BINS, 1 / 16), 0.66))
    cases.append(("single_key", hist(b0=1.0), 0.0))
    for i in range(13):
        h = rng.dirichlet(np.full(N_HIST_BINS, 0.4))
        cases.append((f"random_{i}", h, float(rng.uniform(0, 1))))
    out = []
    for name, h, ent in cases:
        fp = fingerprint_from_hist(h, ent)
        r = classify(fp, version)
        out.append({
            "name": name,
            "fingerprint": [float(x) for x in fp],
            "zone": r.zone,
            "confidence": r.confidence,
            "ripple": round(ripple(fp[4:]), 9),
            "traits": traits(fp, version),
        })
    return out


VECTORS_PATH = __file__.rsplit("/", 1)[0] + "/data/zone_test_vectors.json"


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Zone classifier utilities")
    ap.add_argument("--write-vectors", action="store_true", help=f"write {VECTORS_PATH}")
    args = ap.parse_args()
    if args.write_vectors:
        with open(VECTORS_PATH, "w") as f:
            json.dump({"version": 1, "thresholds": THRESHOLDS, "vectors": _test_vectors(),
                       "focused_entropy": FOCUSED_ENTROPY, "thresholds_v2": THRESHOLDS_V2,
                       "focused_entropy_v2": FOCUSED_ENTROPY_V2, "vectors_v2": _test_vectors(2)}, f, indent=1)
        print(VECTORS_PATH)
