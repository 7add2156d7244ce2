"""bench_capture runs end to end in real subprocesses and reports measured numbers."""
from __future__ import annotations

import json
import subprocess
import sys


def test_bench_capture_prints_one_json_line_per_length():
    cmd = [sys.executable, "-m", "sgl_kernel.bench_capture", "--context-lens", "300,5000", "--heads", "4",
           "--kv-heads", "2", "--head-dim", "16", "--repeats", "1", "--device", "cpu", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["context_len"] for r in rows] == [300, 5000]
    for r in rows:
        assert r["kind"] == "capture" and r["ms"] > 0
        assert r["kv_cache_bytes"] == r["context_len"] * 2 * 16 * 4
        # measured, so > 0 (the op does allocate tiles), and far below the 2 MiB bound
        assert 0 < r["workspace_bytes"] < 8 << 20
        assert 0 < r["mass_captured"] <= 1


def test_bench_capture_bad_arguments_exit_2():
    for bad in (["--context-lens", "abc"], ["--context-lens", "0"], ["--heads", "5", "--kv-heads", "2"]):
        out = subprocess.run([sys.executable, "-m", "sgl_kernel.bench_capture", *bad], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, (bad, out.stderr)
        assert "error" in out.stderr
