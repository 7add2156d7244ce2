"""Offline throughput of the Engine on many prompts of varied lengths.

    python -m sglang.bench_offline_throughput --num-prompts 32 --output-len 128 --baseline transformers

The Engine gets every prompt at once (continuous batching does the rest); the
transformers baseline runs one left-padded greedy ``generate`` over the same prompts in the
same run. Prints one JSON object with output tokens/s of each and their ratio.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see managers/launch.py

import argparse
import time
from typing import Any

from sglang.bench_utils import hf_generate_time, hf_model, make_prompts, run_cli
from sglang.srt.server_args import ServerArgs


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServerArgs.add_cli_args(ap)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--min-input-len", type=int, default=16)
    ap.add_argument("--max-input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--baseline", choices=["none", "transformers"], default="none")
    a = ap.parse_args()
    args = ServerArgs.from_cli_args(a)
    args.validate()
    import dataclasses

    import sglang

    engine = sglang.Engine(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args)})
    try:
        tok = engine.tokenizer
        prompts = make_prompts(tok, a.num_prompts, a.min_input_len, a.max_input_len)
        sp = {"temperature": 0.0, "max_new_tokens": a.output_len, "ignore_eos": True}
        engine.generate(input_ids=[p[:8] for p in prompts[:4]], sampling_params=dict(sp, max_new_tokens=4))
        engine.flush_cache()
        t = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=sp)
        elapsed = time.perf_counter() - t
        n_out = sum(o["meta_info"]["completion_tokens"] for o in outs)
        result: dict[str, Any] = {
            "benchmark": "offline_throughput", "model": engine.model_info["display_name"],
            "num_prompts": a.num_prompts, "input_tokens": sum(map(len, prompts)), "output_tokens": n_out,
            "elapsed_s": round(elapsed, 3), "output_tok_s": round(n_out / elapsed, 2),
            "total_tok_s": round((n_out + sum(map(len, prompts))) / elapsed, 2),
        }
        if a.baseline == "transformers":
            import torch

            from sglang.srt.model_loader.gguf_cache import materialize
            from sglang.srt.model_loader.locate import locate_model

            folder = materialize(locate_model(args.model_path)).folder
            dtype = getattr(torch, engine.model_info["dtype"])
            hf = hf_model(folder, dtype)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            hf_generate_time(hf, [p[:8] for p in prompts[:4]], 4, pad)
            hf_s = hf_generate_time(hf, prompts, a.output_len, pad)
            hf_tps = a.num_prompts * a.output_len / hf_s
            result["transformers"] = {"elapsed_s": round(hf_s, 3), "output_tok_s": round(hf_tps, 2),
                                      "threads": torch.get_num_threads()}
            result["speedup_vs_transformers"] = round(result["output_tok_s"] / hf_tps, 3)
        return result
    finally:
        engine.shutdown()


if __name__ == "__main__":
    run_cli(main)
