"""bench_capture runs end to end in real subprocesses and reports measured numbers."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sgl_kernel.bench_capture import main, measure_workspace, rss_noise_bytes

MiB = 1 << 20


def test_workspace_measurement_sees_a_transient_allocation():
    # RSS counters are approximate (more so with more CPUs): the signal is kept well above
    # their error, and the tolerances are that error.
    noise = rss_noise_bytes()
    size = max(16 * MiB, 8 * noise)

    def holds_transient():
        x = torch.ones(size // 4)  # live during the call, freed before it returns
        return x.sum().reshape(1)

    _, big, method = measure_workspace(holds_transient, "cpu")
    assert big >= size - noise - MiB, (big, size, noise, method)
    _, small, _ = measure_workspace(lambda: torch.zeros(1), "cpu")
    assert small < max(MiB, noise), (small, noise)


def test_bench_capture_workspace_is_flat_while_context_grows():
    # 2k -> 40k keys of a 9-head (3 KV heads) x 64 cache: K grows from 1.5 MiB to 29 MiB;
    # the capture workspace must not follow it.
    cmd = [sys.executable, "-m", "sgl_kernel.bench_capture", "--context-lens", "2000,40000", "--heads", "9",
           "--kv-heads", "3", "--head-dim", "64", "--repeats", "1", "--device", "cpu", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["context_len"] for r in rows] == [2000, 40000]
    for r in rows:
        assert r["kind"] == "capture" and r["ms"] > 0 and "VmHWM" in r["method"]
        assert r["kv_cache_bytes"] == r["context_len"] * 3 * 64 * 4
        assert 0 <= r["workspace_bytes"] < 4 * MiB + r["noise_bytes"]
        assert 0 < r["mass_captured"] <= 1
    assert abs(rows[1]["workspace_bytes"] - rows[0]["workspace_bytes"]) < MiB + 2 * rows[0]["noise_bytes"]


@pytest.mark.parametrize("bad", [["--context-lens", "abc"], ["--context-lens", "0"],
                                 ["--heads", "5", "--kv-heads", "2"], ["--top-k", "-1"]])
def test_bench_capture_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
