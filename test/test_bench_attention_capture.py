"""python -m sglang.bench_attention_capture runs every capture mode through the real
scheduler and prints one JSON document whose numbers are measured, not filled in."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

MODES = {"off", "raw_top5_last", "raw_top32_auto", "sketch_auto", "fingerprint_auto", "mixed_half_raw_top32_auto",
         "per_head_raw_top32_auto", "logit_lens_auto"}


def test_bench_attention_capture_prints_every_mode(tiny_models, tmp_path):
    # The model folder without its tokenizer: --tokenizer-path supplies it (how a GPU
    # machine runs the benchmark on bench_gpu's random-weight models).
    model = tmp_path / "llama"
    shutil.copytree(tiny_models["llama"], model,
                    ignore=lambda d, names: [n for n in names if n.startswith(("tokenizer", "special_tokens", "vocab",
                                                                                "merges"))])
    cmd = [sys.executable, "-m", "sglang.bench_attention_capture", "--model-path", str(model),
           "--tokenizer-path", tiny_models["llama"], "--device", "cpu", "--num-prompts", "4", "--input-len", "24",
           "--output-len", "4", "--repeats", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    assert rep["benchmark"] == "attention_capture" and rep["num_prompts"] == 4 and set(rep["modes"]) == MODES
    m = rep["modes"]
    for name, r in m.items():
        assert r["output_tok_s"] > 0 and r["cpu_ms_per_token"] > 0, name
        assert abs(r["throughput_vs_off"] - r["output_tok_s"] / m["off"]["output_tok_s"]) < 1e-3
    # bytes per captured step follow what each mode sends
    assert m["off"]["bytes_per_step"] == 0
    assert 0 < m["fingerprint_auto"]["bytes_per_step"] < m["raw_top32_auto"]["bytes_per_step"]
    assert m["raw_top5_last"]["bytes_per_step"] < m["raw_top32_auto"]["bytes_per_step"]
    assert m["sketch_auto"]["bytes_per_step"] > m["fingerprint_auto"]["bytes_per_step"]
    assert m["per_head_raw_top32_auto"]["bytes_per_step"] > m["raw_top32_auto"]["bytes_per_step"]  # one entry per head
    # host cost of capture per step, and the scheduler's output message per step
    for name, r in m.items():
        assert r["capture_host_ms_per_step"] >= 0 and r["message_pickle_ms_per_step"] > 0, name
    assert m["off"]["message_bytes_per_step"] < m["fingerprint_auto"]["message_bytes_per_step"] \
        < m["raw_top32_auto"]["message_bytes_per_step"]


def test_bench_attention_capture_bad_flag_exits_2():
    p = subprocess.run([sys.executable, "-m", "sglang.bench_attention_capture", "--num-prompts", "x"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--num-prompts" in p.stderr
