"""Cost of attention capture: throughput per capture mode on the same prompts, one run.

    python -m sglang.bench_attention_capture --num-prompts 8 --output-len 64 --baseline transformers

Modes: off, raw top-5 on the last layer, raw top-32 on `auto` layers, sketch (auto),
fingerprint (auto), and a mixed batch where half the requests capture raw top-32/auto.
Each runs the same prompts through the real scheduler (in-process, continuous batching);
bytes per step is the size of the JSON entries a client receives per decode step. On a
GPU the decode step of a small model is bound by host work, so each mode also reports the
scheduler's host time inside capture per step (setup, after-forward, results to the host,
payloads) and the time and size of pickling each step's output message. With
``--baseline transformers`` the same prompts go through transformers' ``generate`` with
eager attention and ``output_attentions=True`` (what one would do without this engine).
Prints one JSON object.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see managers/launch.py

import argparse
import json
import pickle
import time
from typing import Any

from sglang.bench_utils import make_prompts, run_cli
from sglang.srt.managers.io_struct import BatchTokenOut, CaptureParams, auto_layers
from sglang.srt.server_args import ServerArgs


def _run(sched: Any, prompts: list[list[int]], caps: list[CaptureParams | None], out_len: int) -> dict[str, Any]:
    from sglang.srt.capture.entries import build_entries
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    sched.flush_cache()
    sp = SamplingParams(max_new_tokens=out_len, temperature=0.0, ignore_eos=True)
    for i, (p, c) in enumerate(zip(prompts, caps)):
        cap = None if c is None else CaptureParams(**vars(c))
        sched.add_request(TokenizedGenerateReqInput(f"q{i}-{time.time()}", p, sp, stream=True, capture=cap))
    payload_bytes = 0
    captured_steps = 0
    lens = {}
    hook_time = _HookTimer.reset(sched)
    steps, pickle_s, message_bytes = 0, 0.0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    while sched.has_work():
        outs = sched.step()
        steps += 1
        t = time.perf_counter()
        message_bytes += len(pickle.dumps(BatchTokenOut(outs)))  # what the scheduler sends each step
        pickle_s += time.perf_counter() - t
        for o in outs:
            tokens += len(o.new_token_ids)
            if o.capture:
                entries = build_entries(o.capture, lens.setdefault(o.rid, o.prompt_tokens))
                payload_bytes += len(json.dumps(entries, separators=(",", ":")))
                captured_steps += len({e["decode_step"] for e in entries})
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds of this process (all threads): unlike wall time, barely moved by other
    # tenants of a shared VM taking the cores, so small differences between modes show.
    return {"elapsed_s": round(elapsed, 3), "output_tok_s": round(tokens / elapsed, 2),
            "cpu_s": round(cpu, 3), "cpu_ms_per_token": round(cpu / max(tokens, 1) * 1e3, 3),
            "bytes_per_step": round(payload_bytes / captured_steps, 1) if captured_steps else 0,
            "capture_host_ms_per_step": round(hook_time.total * 1e3 / max(steps, 1), 4),
            "message_pickle_ms_per_step": round(pickle_s * 1e3 / max(steps, 1), 4),
            "message_bytes_per_step": round(message_bytes / max(steps, 1), 1)}


class _HookTimer:
    """Host time spent in the capture hook's per-step calls (setup, after the forward,
    after sampling, payloads), read per run."""
    CALLS = ("prepare", "after_forward", "after_step", "take_payload")

    def __init__(self, hook: Any) -> None:
        self.total = 0.0
        for name in self.CALLS:
            setattr(hook, name, self._timed(getattr(hook, name)))

    def _timed(self, fn: Any) -> Any:
        def run(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.total += time.perf_counter() - t
        return run

    @classmethod
    def reset(cls, sched: Any) -> "_HookTimer":
        timer = getattr(sched, "_bench_hook_timer", None)
        if timer is None:
            timer = sched._bench_hook_timer = cls(sched.capture_hook)
        timer.total = 0.0
        return timer


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServerArgs.add_cli_args(ap)
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="runs per mode, interleaved across modes (the best is reported)")
    ap.add_argument("--baseline", choices=["none", "transformers"], default="none")
    a = ap.parse_args()
    args = ServerArgs.from_cli_args(a)
    args.return_attention_tokens = True
    args.validate()
    import torch

    from sglang.srt.capture.hook import maybe_install_capture
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    sched = Scheduler(args)
    maybe_install_capture(sched)
    L = sched.cfg.num_layers
    auto = auto_layers(L)
    tok = load_tokenizer(sched.runner.files, args.tokenizer_path)
    prompts = make_prompts(tok, a.num_prompts, a.input_len, a.input_len)
    n = a.num_prompts
    raw32 = CaptureParams(mode="raw", top_k=32, layers=auto)
    modes: dict[str, list[CaptureParams | None]] = {
        "off": [None] * n,
        "raw_top5_last": [CaptureParams(mode="raw", top_k=5, layers=[L - 1])] * n,
        "raw_top32_auto": [raw32] * n,
        "sketch_auto": [CaptureParams(mode="sketch", top_k=5, layers=auto)] * n,
        "fingerprint_auto": [CaptureParams(mode="fingerprint", layers=auto)] * n,
        "mixed_half_raw_top32_auto": [raw32 if i % 2 else None for i in range(n)],
        # the logit lens on the auto layers, riding on the cheapest capture (fingerprint of the last layer)
        # per-head raw top-32 on the auto layers (every head, against the head mean above)
        "per_head_raw_top32_auto": [CaptureParams(mode="raw", top_k=32, layers=auto,
                                                  heads_each=list(range(sched.cfg.num_heads)))] * n,
        "logit_lens_auto": [CaptureParams(mode="fingerprint", layers=[L - 1], logit_lens_layers=auto)] * n,
    }
    # Warm-up on the full prompts: the first run also faults in the KV pool's pages, which
    # would otherwise bias whichever mode runs first.
    _run(sched, prompts, [raw32 if i % 2 else None for i in range(n)], 8)
    results: dict[str, Any] = {}
    for _ in range(a.repeats):  # round robin over the modes, so drifting load hits them all alike
        for name, caps in modes.items():
            r = _run(sched, prompts, caps, a.output_len)
            costs = ("cpu_ms_per_token", "capture_host_ms_per_step", "message_pickle_ms_per_step")
            best = {k: min(r[k], results[name][k]) for k in costs} if name in results else {}
            if name not in results or r["output_tok_s"] > results[name]["output_tok_s"]:
                results[name] = r
            results[name].update(best)  # each figure is the best of its own kind over the repeats
    off = results["off"]["output_tok_s"]
    for name, r in results.items():
        r["throughput_vs_off"] = round(r["output_tok_s"] / off, 4)
        # the same ratio from CPU time per token (off's CPU cost / this mode's)
        r["cpu_throughput_vs_off"] = round(results["off"]["cpu_ms_per_token"] / r["cpu_ms_per_token"], 4)
    out: dict[str, Any] = {"benchmark": "attention_capture", "model": sched.runner.files.display_name,
                           "device": str(sched.runner.device), "num_prompts": n, "input_len": a.input_len,
                           "output_len": a.output_len, "threads": torch.get_num_threads(), "modes": results}
    if a.baseline == "transformers":
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(sched.runner.files.folder, dtype=sched.runner.dtype,
                                                  attn_implementation="eager").eval()
        ids = torch.tensor(prompts)
        t = time.perf_counter()
        with torch.no_grad():
            g = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.output_len,
                            min_new_tokens=a.output_len, do_sample=False, output_attentions=True,
                            return_dict_in_generate=True, pad_token_id=0)
        elapsed = time.perf_counter() - t
        att_bytes = sum(x.numel() * x.element_size() for step in g.attentions for x in step)
        out["transformers_output_attentions"] = {
            "elapsed_s": round(elapsed, 3), "output_tok_s": round(n * a.output_len / elapsed, 2),
            "attention_bytes_per_step": round(att_bytes / (n * a.output_len), 1),
        }
    return out


if __name__ == "__main__":
    run_cli(main)
