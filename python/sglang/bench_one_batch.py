"""Latency of one static batch: prefill, then decode steps, through the real scheduler.

    python -m sglang.bench_one_batch --batch-size 1 8 --input-len 128 --output-len 64 --baseline transformers

Prints one JSON object with, per batch size, prefill seconds, decode tokens/s and (with
--baseline transformers) the same for transformers' generate on the same prompts in the
same run, and the ratio.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see managers/launch.py

import argparse
import time
from typing import Any

from sglang.bench_utils import engine_from_cli, hf_generate_time, hf_model, make_prompts, run_cli
from sglang.srt.server_args import ServerArgs


def _engine_batch(sched: Any, prompts: list[list[int]], out_len: int) -> tuple[float, float]:
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    sp = SamplingParams(max_new_tokens=out_len, temperature=0.0, ignore_eos=True)
    sched.flush_cache()  # no radix reuse between repetitions
    for i, p in enumerate(prompts):
        sched.add_request(TokenizedGenerateReqInput(f"b{i}-{time.time()}", p, sp, stream=False))
    t0 = time.perf_counter()
    prefill = None
    while sched.has_work():
        sched.step()
        if prefill is None and len(sched.running) == len(prompts) and not sched.waiting and not sched.chunked:
            prefill = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return prefill or total, total


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServerArgs.add_cli_args(ap)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--baseline", choices=["none", "transformers"], default="none")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved runs of engine and baseline; the fastest of each is reported "
                         "(robust to other processes sharing the cores)")
    a = ap.parse_args()
    sched, tok = engine_from_cli(a)
    import torch
    hf = hf_model(sched.runner.files.folder, sched.runner.dtype) if a.baseline == "transformers" else None
    results = []
    for bs in a.batch_size:
        prompts = make_prompts(tok, bs, a.input_len, a.input_len, seed=bs)
        for _ in range(a.warmup):
            _engine_batch(sched, [p[:16] for p in prompts], 4)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        if hf is not None:
            hf_generate_time(hf, [p[:16] for p in prompts], 4, pad)  # warm-up
        runs, hf_runs = [], []
        for _ in range(a.repeats):  # interleaved, so both sides see the same machine load
            runs.append(_engine_batch(sched, prompts, a.output_len))
            if hf is not None:
                hf_runs.append((hf_generate_time(hf, prompts, 1, pad), hf_generate_time(hf, prompts, a.output_len, pad)))
        prefill = min(r[0] for r in runs)
        decode = min(t - p for p, t in runs)
        total = min(r[1] for r in runs)
        decode_tps = bs * (a.output_len - 1) / max(decode, 1e-9)
        row: dict[str, Any] = {"batch_size": bs, "input_len": a.input_len, "output_len": a.output_len,
                               "repeats": a.repeats, "prefill_s": round(prefill, 4), "total_s": round(total, 4),
                               "decode_tok_s": round(decode_tps, 2)}
        if hf is not None:
            hf_prefill = min(r[0] for r in hf_runs)
            # prefill and full generation are separate calls here, so pairing them by run
            # would let one noisy prefill shrink the decode time: take each side's fastest
            hf_decode_s = min(r[1] for r in hf_runs) - hf_prefill
            hf_decode = bs * (a.output_len - 1) / max(hf_decode_s, 1e-9)
            row["transformers"] = {"prefill_s": round(hf_prefill, 4), "total_s": round(min(r[1] for r in hf_runs), 4),
                                   "decode_tok_s": round(hf_decode, 2)}
            row["decode_speedup_vs_transformers"] = round(decode_tps / hf_decode, 3)
        results.append(row)
    return {"benchmark": "one_batch", "model": sched.runner.files.display_name, "dtype": str(sched.runner.dtype),
            "device": str(sched.runner.device), "threads": torch.get_num_threads(), "results": results}


if __name__ == "__main__":
    run_cli(main)
