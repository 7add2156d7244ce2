"""bench_capture runs end to end in real subprocesses and reports measured numbers."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sgl_kernel.bench_capture import main


def test_bench_capture_prints_one_json_line_per_length():
    cmd = [sys.executable, "-m", "sgl_kernel.bench_capture", "--context-lens", "300,5000", "--heads", "9",
           "--kv-heads", "3", "--head-dim", "64", "--repeats", "1", "--device", "cpu", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["context_len"] for r in rows] == [300, 5000]
    for r in rows:
        assert r["kind"] == "capture" and r["ms"] > 0
        assert r["kv_cache_bytes"] == r["context_len"] * 3 * 64 * 4
        # measured: a tile of 256 keys x 9 heads x 64 dims is mmapped, so it shows (> 0);
        # and it is bounded by the tile, not the context
        assert 0 < r["workspace_bytes"] < 4 << 20
        assert 0 < r["mass_captured"] <= 1


@pytest.mark.parametrize("bad", [["--context-lens", "abc"], ["--context-lens", "0"],
                                 ["--heads", "5", "--kv-heads", "2"], ["--top-k", "-1"]])
def test_bench_capture_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
