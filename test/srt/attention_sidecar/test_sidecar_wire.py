"""ZMQ frame decoding: what is accepted, and every rejection reason."""
from __future__ import annotations

import json

import pytest

from sglang.srt.attention_sidecar.wire import RejectedMessage, parse_frame

GOOD = {"version": 1, "kind": "request", "request_id": "r-1", "vector": [0.05] * 20, "manifold": "syntax_floor",
        "step": 7, "think_phase": "think", "model": "m", "timestamp": 12.5, "session_id": "s"}


def test_full_message_round_trips_every_field() -> None:
    m = parse_frame(json.dumps(GOOD).encode(), 99.0)
    assert (m.request_id, m.session_id, m.kind, m.step, m.think_phase, m.manifold, m.model, m.timestamp) == (
        "r-1", "s", "request", 7, "think", "syntax_floor", "m", 12.5)
    assert m.received_at == 99.0 and m.vector == [0.05] * 20


def test_only_vector_is_required_and_ints_are_numbers() -> None:
    m = parse_frame(json.dumps({"vector": [0] * 19 + [1]}).encode(), 0.0)
    assert m.kind == "step" and m.request_id is None and m.vector[-1] == 1.0
    assert parse_frame(json.dumps({"vector": [0.0] * 20, "request_id": 5}).encode(), 0).request_id == "5"
    obj = parse_frame(json.dumps({"vector": [0.0] * 20, "manifold": {"zone": "diffuse"}}).encode(), 0)
    assert json.loads(obj.manifold) == {"zone": "diffuse"}


@pytest.mark.parametrize("frame,reason", [
    (b"\xff\xfe", "bad_json"),
    (b"{not json", "bad_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b"{}", "missing_vector"),
    (json.dumps({"vector": [0.1] * 19}).encode(), "bad_vector"),
    (json.dumps({"vector": [0.1] * 21}).encode(), "bad_vector"),
    (json.dumps({"vector": "0.1"}).encode(), "bad_vector"),
    (json.dumps({"vector": [True] * 20}).encode(), "bad_vector"),
    (json.dumps({"vector": ["0.1"] * 20}).encode(), "bad_vector"),
    (json.dumps({"vector": [None] * 20}).encode(), "bad_vector"),
    (b'{"vector": [NaN' + b", 0" * 19 + b"]}", "non_finite"),
    (b'{"vector": [Infinity' + b", 0" * 19 + b"]}", "non_finite"),
    (b'{"vector": [-Infinity' + b", 0" * 19 + b"]}", "non_finite"),
    (json.dumps({"vector": [10 ** 400] * 20}).encode(), "non_finite"),
    (json.dumps({"vector": [10 ** 400, -10 ** 400] + [0] * 18}).encode(), "non_finite"),  # sum is 0
    (json.dumps({"vector": [0.0] * 20, "version": 2}).encode(), "unsupported_version"),
    (json.dumps({"vector": [0.0] * 20, "kind": "token"}).encode(), "bad_field"),
    (json.dumps({"vector": [0.0] * 20, "step": -1}).encode(), "bad_field"),
    (json.dumps({"vector": [0.0] * 20, "step": "3"}).encode(), "bad_field"),
    (json.dumps({"vector": [0.0] * 20, "think_phase": "dream"}).encode(), "bad_field"),
    (json.dumps({"vector": [0.0] * 20, "timestamp": "now"}).encode(), "bad_field"),
    (json.dumps({"vector": [0.0] * 20, "request_id": ["x"]}).encode(), "bad_field"),
    (b'{"vector":' * 3000, "bad_json"),
])
def test_malformed_frames_are_rejected_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        parse_frame(frame, 0.0)
    assert e.value.reason == reason


def test_large_finite_values_are_not_mistaken_for_infinity() -> None:
    # their sum overflows to inf, each value is finite: accepted
    m = parse_frame(json.dumps({"vector": [1e308] * 20}).encode(), 0.0)
    assert m.vector[0] == 1e308


@pytest.mark.parametrize("value,expect", [(None, 1), (1, 1), (2, 2)])
def test_fingerprint_version_is_optional_and_absent_means_1(value, expect) -> None:
    obj = {"vector": [0.0] * 20} if value is None else {"vector": [0.0] * 20, "fingerprint_version": value}
    assert parse_frame(json.dumps(obj).encode(), 0.0).fingerprint_version == expect
    # JSON null is "not said", like the other optional fields
    assert parse_frame(json.dumps({"vector": [0.0] * 20, "fingerprint_version": None}).encode(), 0).fingerprint_version == 1


@pytest.mark.parametrize("value", [0, 3, -1, "2", 2.0, True, [2], {"v": 2}])
def test_unknown_fingerprint_versions_are_rejected_with_their_own_reason(value) -> None:
    with pytest.raises(RejectedMessage) as e:
        parse_frame(json.dumps({"vector": [0.0] * 20, "fingerprint_version": value}).encode(), 0.0)
    assert e.value.reason == "unsupported_fingerprint_version" and "[1, 2]" in str(e.value)
