"""python -m sglang.bench_cpu_gemm times every CPU matmul path on a model's shapes, and
refuses bad arguments with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sgl_kernel import cpu_ops

SMALL = ["--hidden", "64", "--intermediate", "128", "--q-heads", "2", "--kv-heads", "1", "--head-dim", "32",
         "--layers", "2", "--vocab", "500", "--rounds", "1", "--repeats", "1"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sglang.bench_cpu_gemm", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(not cpu_ops.small_gemm_available(), reason="sgl_kernel's GEMM extension does not build here")
def test_bench_cpu_gemm_reports_every_path() -> None:
    p = _run("--rows", "3", "80", *SMALL)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["benchmark"] == "cpu_gemm" and rep["layers"] == 2
    assert rep["shapes"] == {"qkv": [128, 64], "o": [64, 64], "gate_up": [256, 64], "down": [64, 128], "lm_head": [500, 64]}
    assert rep["weight_bytes"] == 4 * (2 * (128 * 64 + 64 * 64 + 256 * 64 + 64 * 128) + 500 * 64)
    small, large = rep["results"]
    assert small["rows"] == 3 and large["rows"] == 80
    for name in ("packed", "onednn", "mkl", "small"):
        assert len(small[f"{name}_ms"]) == 1 and small[f"{name}_ms"][0] > 0 and small[f"{name}_gflop_s"] > 0
    assert "small_ms" not in large  # the small GEMM takes up to 64 rows
    assert large["packed_ms"][0] > 0


def test_bench_cpu_gemm_refuses_bad_arguments() -> None:
    p = _run("--rows", "0", *SMALL)
    assert p.returncode == 2 and "--rows" in p.stderr
    p = _run("--layers", "0")
    assert p.returncode == 2 and "--layers" in p.stderr
