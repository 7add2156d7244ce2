"""Decoding of fingerprint messages received over ZMQ (docs/architecture.md#wire-fingerprint-messages).

One frame per message, a UTF-8 JSON object::

    {"version": 1, "kind": "step" | "request", "request_id", "vector": [20 floats],
     "fingerprint_version": 1 | 2, "manifold", "step", "think_phase", "model", "timestamp"}

Only ``vector`` is required. ``session_id`` is accepted as an optional extension (it fills the
``sessions`` table). ``version`` is the wire format's version; ``fingerprint_version`` is the
definition of the vector (``sgl_kernel.zones.FINGERPRINT_VERSIONS``: 1 = over every key, 2 =
sink-aware); a message without it is version 1, the only one that existed before it was sent. Anything malformed raises :class:`RejectedMessage` with a short reason
that the receivers count in ``/stats``; nothing here may raise anything else.

This runs once per message at tens of thousands of messages per second, so it avoids numpy
and per-field helper calls: plain type checks, one ``sum`` for the finiteness test.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from sgl_kernel.zones import FINGERPRINT_DIM, FINGERPRINT_VERSIONS

try:  # orjson is ~3x faster; it rejects NaN/Infinity tokens, which we reject anyway
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - the server extra installs orjson
    import json

    _loads = json.loads

WIRE_VERSION = 1
UNVERSIONED_FINGERPRINT = 1  # the fingerprint version of a message that does not say
KINDS = ("step", "request")
THINK_PHASES = ("think", "output")
VECTOR_STRUCT = struct.Struct(f"<{FINGERPRINT_DIM}d")  # SQLite BLOB layout: 20 little-endian float64


class RejectedMessage(Exception):
    """A frame that is not a valid fingerprint message; ``reason`` is a stable counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FingerprintMessage(NamedTuple):
    """An accepted message; field order matches the ``fingerprints`` INSERT in ``store.py``."""

    request_id: str | None
    session_id: str | None
    kind: str
    step: int | None
    think_phase: str | None
    manifold: str | None
    model: str | None
    timestamp: float | None
    received_at: float
    vector: list[float]  # 20 finite numbers (JSON ints stay ints)
    fingerprint_version: int = UNVERSIONED_FINGERPRINT  # 1 or 2 (sgl_kernel.zones.FINGERPRINT_VERSIONS)


def _opt_str(obj: dict[str, Any], key: str, max_len: int = 512) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        raise RejectedMessage("bad_field", key)
    if isinstance(v, int):  # numeric request ids are common; store them as text
        return str(v)
    if not isinstance(v, str) or len(v) > max_len:
        raise RejectedMessage("bad_field", key)
    return v


def check_vector(vec: Any) -> list[float]:
    """The 20 values (ints allowed) as received, or RejectedMessage(bad_vector | non_finite).

    Returns the decoded list itself: converting to a tuple of floats costs ~1 us a message and
    every consumer (struct.pack, numpy) accepts ints.
    """
    if type(vec) is not list:
        raise RejectedMessage("bad_vector", "vector is not a list")
    if len(vec) != FINGERPRINT_DIM:
        raise RejectedMessage("bad_vector", f"vector has {len(vec)} values, expected {FINGERPRINT_DIM}")
    has_int = False
    for x in vec:
        t = type(x)
        if t is not float:
            if t is not int:  # excludes bool, str, None, nested lists
                raise RejectedMessage("bad_vector", "vector holds a non-number")
            has_int = True
    try:
        if has_int:
            VECTOR_STRUCT.pack(*vec)  # ints beyond float range raise struct.error
        # every element is finite iff the sum is; only when finite values overflow do we look closer
        if not math.isfinite(sum(vec)) and not all(math.isfinite(x) for x in vec):
            raise RejectedMessage("non_finite", "vector holds NaN or infinity")
    except (OverflowError, struct.error):
        raise RejectedMessage("non_finite", "vector value out of float range") from None
    return vec


def parse_frame(frame: bytes, received_at: float) -> FingerprintMessage:
    """Decode one ZMQ frame into a :class:`FingerprintMessage` or raise RejectedMessage."""
    try:
        obj = _loads(frame)
    except Exception:
        # cold path: the stdlib parser accepts NaN/Infinity tokens and huge integers, so a
        # frame that only fails orjson for those is reported as non_finite, not as bad JSON
        obj = _slow_loads(frame)
    if type(obj) is not dict:
        raise RejectedMessage("not_an_object", type(obj).__name__)
    if "vector" not in obj:
        raise RejectedMessage("missing_vector")
    version = obj.get("version", WIRE_VERSION)
    if version != WIRE_VERSION or isinstance(version, bool):
        raise RejectedMessage("unsupported_version", repr(version)[:40])
    vector = check_vector(obj["vector"])
    fingerprint_version = obj.get("fingerprint_version")
    if fingerprint_version is None:
        fingerprint_version = UNVERSIONED_FINGERPRINT
    elif type(fingerprint_version) is not int or fingerprint_version not in FINGERPRINT_VERSIONS:
        raise RejectedMessage("unsupported_fingerprint_version",
                              f"{repr(fingerprint_version)[:40]}, expected one of {list(FINGERPRINT_VERSIONS)}")
    kind = obj.get("kind") or "step"
    if kind not in KINDS:
        raise RejectedMessage("bad_field", "kind")
    step = obj.get("step")
    if step is not None and (type(step) is not int or step < 0):
        raise RejectedMessage("bad_field", "step")
    think_phase = obj.get("think_phase")
    if think_phase is not None and think_phase not in THINK_PHASES:
        raise RejectedMessage("bad_field", "think_phase")
    ts = obj.get("timestamp")
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise RejectedMessage("bad_field", "timestamp")
        ts = float(ts)
    manifold = obj.get("manifold")
    if manifold is not None and not isinstance(manifold, str):
        # engines may send the manifold as a small object (zone + confidence); keep it as JSON text
        manifold = _dumps_small(manifold)
    return FingerprintMessage(
        _opt_str(obj, "request_id"),
        _opt_str(obj, "session_id"),
        kind,
        step,
        think_phase,
        manifold,
        _opt_str(obj, "model"),
        ts,
        received_at,
        vector,
        fingerprint_version,
    )


def _slow_loads(frame: bytes) -> Any:
    import json

    try:
        return json.loads(frame)
    except (ValueError, UnicodeDecodeError, TypeError, RecursionError) as e:
        raise RejectedMessage("bad_json", str(e)[:120]) from None


def _dumps_small(v: Any) -> str:
    import json

    try:
        s = json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        raise RejectedMessage("bad_field", "manifold") from None
    if len(s) > 4096:
        raise RejectedMessage("bad_field", "manifold")
    return s


@dataclass
class RejectCounter:
    """Counts rejected frames by reason and keeps the last few details for /stats."""

    total: int = 0

    def __post_init__(self) -> None:
        self.by_reason: dict[str, int] = {}
        self.last_errors: list[str] = []

    def add(self, err: RejectedMessage) -> None:
        self.total += 1
        self.by_reason[err.reason] = self.by_reason.get(err.reason, 0) + 1
        self.last_errors.append(str(err))
        if len(self.last_errors) > 10:
            del self.last_errors[0]
