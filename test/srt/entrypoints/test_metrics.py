"""Prometheus exposition of the server metrics (real prometheus-client text)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sglang.srt.metrics import ServerMetrics


def samples(text: bytes) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            key = s.name + ("{le=" + s.labels["le"] + "}" if "le" in s.labels else "")
            out[key] = s.value
    return out


def test_load_gauges_and_counters_come_from_get_load() -> None:
    m = ServerMetrics("smol")
    text = m.render({"num_running": 3, "num_waiting": 2, "kv_used_tokens": 50, "kv_total_tokens": 200,
                     "cache_hit_rate": 0.25, "generated_tokens_total": 1234, "capture_sidecar_dropped": 7})
    s = samples(text)
    assert s["sglang:num_running_reqs"] == 3
    assert s["sglang:num_queue_reqs"] == 2
    assert s["sglang:token_usage"] == 0.25
    assert s["sglang:generation_tokens_total"] == 1234
    assert s["sglang:capture_sidecar_dropped_total"] == 7
    assert b'model_name="smol"' in text


def test_latency_histograms() -> None:
    m = ServerMetrics("smol")
    m.request_started()
    m.observe_ttft(0.3)
    m.observe_itl(0.02, 4)
    m.request_finished(1.0, 5, ok=True)
    s = samples(m.render(None))
    assert s["sglang:time_to_first_token_seconds_count"] == 1
    assert s["sglang:time_to_first_token_seconds_bucket{le=0.25}"] == 0
    assert s["sglang:time_to_first_token_seconds_bucket{le=0.5}"] == 1
    assert s["sglang:inter_token_latency_seconds_count"] == 4
    assert s["sglang:http_generation_tokens_total"] == 5
    assert s["sglang:http_requests_in_flight"] == 0
    assert s["sglang:num_running_reqs"] == 0  # no engine load yet: zeros, not an error
