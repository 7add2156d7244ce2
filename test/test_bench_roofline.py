"""python -m sglang.bench_roofline measures bandwidth and batch-1 decode, and --profile
splits a step's time into categories that add up to the step."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_roofline_prints_roofline_and_profile(tiny_models):
    cmd = [sys.executable, "-m", "sglang.bench_roofline", "--model-path", tiny_models["llama"], "--device", "cpu",
           "--input-len", "16", "--output-len", "4", "--repeats", "1", "--buffer-mib", "16",
           "--profile", "1", "2", "prefill", "--profile-steps", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["benchmark"] == "roofline" and rep["weight_bytes"] > 0
    assert rep["bandwidth_copy_gb_s"] > 0 and rep["batch1_decode_tok_s"] > 0
    assert abs(rep["roofline_tok_s"] - rep["bandwidth_copy_gb_s"] * 1e9 / rep["weight_bytes"]) < 0.01 * rep["roofline_tok_s"] + 0.01
    assert abs(rep["percent_of_roofline"] - 100 * rep["batch1_decode_tok_s"] / rep["roofline_tok_s"]) < 0.5
    prof = rep["profile"]
    assert set(prof) == {"decode_bs1", "decode_bs2", "prefill"}
    for name in ("decode_bs1", "decode_bs2"):
        row = prof[name]
        assert row["step_ms"] > 0 and row["ms_per_step"]["linear GEMMs"] > 0 and row["ms_per_step"]["attention"] > 0
        # the categories and the rest add up to the profiled step
        assert abs(sum(row["ms_per_step"].values()) - row["profiled_step_ms"]) < 0.02 * row["profiled_step_ms"] + 0.05
    assert prof["prefill"]["tokens"] > 0 and prof["prefill"]["ms"]["linear GEMMs"] > 0


def test_weight_bytes_counts_tied_weights_once():
    import torch
    from torch import nn

    from sglang.bench_roofline import weight_bytes

    m = nn.Module()
    m.a = nn.Linear(4, 8, bias=False)
    m.b = nn.Linear(4, 8, bias=False)
    m.b.weight = m.a.weight
    m.c = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    assert weight_bytes(m) == 8 * 4 * 4 + 3 * 8
