"""bench_serving: statistics, prompts, and one real run (server + offline Engine) on a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sglang.bench_serving import RequestResult, _pct, summarize, synthetic_requests


def test_percentiles_and_summary() -> None:
    assert _pct([1, 2, 3, 4], 50) == 2.5
    assert _pct([5], 99) == 5
    rs = [RequestResult(ok=True, ttft=0.1, latency=1.1, output_tokens=11, prompt_tokens=5, itl=[0.1] * 10),
          RequestResult(ok=True, ttft=0.3, latency=1.3, output_tokens=11, prompt_tokens=5, itl=[0.1] * 10),
          RequestResult(ok=False, error="HTTP 400")]
    s = summarize(rs, duration=2.0)
    assert s["completed"] == 2 and s["failed"] == 1 and s["errors"] == ["HTTP 400"]
    assert s["output_throughput_tok_s"] == 11.0
    assert s["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert s["tpot_ms"]["mean"] == pytest.approx(100.0)
    assert s["itl_ms"]["p99"] == pytest.approx(100.0)


def test_synthetic_prompts_are_deterministic_and_varied() -> None:
    a = synthetic_requests(8, 32, 16, seed=3)
    assert a == synthetic_requests(8, 32, 16, seed=3)
    assert len({r.prompt for r in a}) == 8 and all(r.output_len == 16 for r in a)
    assert synthetic_requests(8, 32, 16, seed=4) != a


@pytest.mark.slow
def test_real_run_with_offline_comparison(tiny_models: dict[str, str], tmp_path) -> None:
    out = tmp_path / "bench.json"
    port = 30000 + (abs(hash(str(tmp_path))) % 20000)
    r = subprocess.run([sys.executable, "-m", "sglang.bench_serving", "--launch-server", "--port", str(port),
                        "--server-args", f"--model-path {tiny_models['llama']}", "--backend", "openai-chat",
                        "--num-prompts", "6", "--max-concurrency", "3", "--random-input-len", "12",
                        "--random-output-len", "5", "--compare-offline", "--output-file", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report == json.loads(r.stdout)
    for side in ("server", "offline_engine"):
        s = report[side]
        assert s["completed"] == 6 and s["failed"] == 0
        assert s["total_output_tokens"] == 30  # ignore_eos: exactly output_len each
        assert s["ttft_ms"]["p50"] > 0 and s["ttft_ms"]["p99"] >= s["ttft_ms"]["p50"]
        assert s["output_throughput_tok_s"] > 0
    assert report["server_vs_offline_throughput"] > 0
