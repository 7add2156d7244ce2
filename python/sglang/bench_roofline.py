"""Batch-1 decode against this machine's memory-bandwidth roofline, and where a step's time goes.

    python -m sglang.bench_roofline                       # bandwidth, batch-1 decode, % of roofline
    python -m sglang.bench_roofline --profile 1 32        # + time per category of a decode step at batch 1 and 32
    python -m sglang.bench_roofline --profile 1 32 prefill  # + the prefill of the offline set

At batch 1 a decode step reads every weight once (the tied embedding is read once, as the
LM head), so the fastest possible step takes weight bytes / memory bandwidth: the
roofline. Bandwidth is the best of several copies of a large buffer (bytes read plus bytes
written per second, what ``stream``'s copy reports) and, for reference, the best of several
sums (read only). Decode runs through the real scheduler as in ``bench_one_batch``
(``--input-len`` prompt tokens, ``--output-len`` new tokens, greedy), interleaved with the
bandwidth runs so both see the same load; the fastest of ``--repeats`` is reported.

``--profile`` times each category of work inside a step with wall-clock timers around the
layers' forwards (CPU work is synchronous, so the timers are exact): the linear layers
(GEMMs), the LM head, KV writes, attention, norms, rotary, activation, embedding, sampling
and output bookkeeping; "python and scheduling" is the rest of the step (batch building,
tensor glue in the model, the per-layer Python). Timers add a few microseconds per call,
so ``step_ms`` (unprofiled) is reported next to ``profiled_step_ms``.
Prints one JSON object.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see managers/launch.py

import argparse
import contextlib
import time
from collections import defaultdict
from typing import Any, Callable, Iterator

from sglang.bench_utils import engine_from_cli, make_prompts, run_cli
from sglang.srt.server_args import ServerArgs


def measure_bandwidth(mib: int = 512, repeats: int = 5) -> dict[str, float]:
    """Best copy (read + write bytes / s) and best sum (read bytes / s) of a ``mib`` MiB
    float32 buffer, in GB/s."""
    import torch

    src = torch.ones(mib << 18, dtype=torch.float32)  # mib MiB
    dst = torch.empty_like(src)
    n = src.numel() * 4
    dst.copy_(src)
    copy_s, read_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        copy_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        src.sum()
        read_s.append(time.perf_counter() - t)
    return {"copy_gb_s": round(2 * n / min(copy_s) / 1e9, 2), "read_gb_s": round(n / min(read_s) / 1e9, 2)}


def weight_bytes(model: Any) -> int:
    """Bytes of the distinct parameters (a tied embedding counts once): what a batch-1
    decode step must read. Packed copies replace their originals, they are not read twice."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def _submit(sched: Any, prompts: list[list[int]], out_len: int) -> None:
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    sp = SamplingParams(max_new_tokens=out_len, temperature=0.0, ignore_eos=True)
    sched.flush_cache()
    for i, p in enumerate(prompts):
        sched.add_request(TokenizedGenerateReqInput(f"r{i}-{time.time()}", p, sp, stream=False))


def _prefill_all(sched: Any) -> None:
    while sched.waiting or sched.chunked is not None:
        sched.step()


def decode_step_s(sched: Any, prompts: list[list[int]], steps: int) -> float:
    """Seconds per decode step over ``steps`` steps after the prefill (median-free: total / steps)."""
    _submit(sched, prompts, steps + 2)
    _prefill_all(sched)
    sched.step()  # first decode step
    t = time.perf_counter()
    for _ in range(steps):
        sched.step()
    s = (time.perf_counter() - t) / steps
    while sched.has_work():
        sched.step()
    return s


class StepProfile:
    """Wall-clock timers around the pieces of a step (patched onto the classes while active)."""

    CATEGORIES = ("linear GEMMs", "LM head", "KV write", "attention", "norms", "rotary", "activation",
                  "embedding", "sampling and bookkeeping")

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _wrap(self, fn: Callable[..., Any], cat: str) -> Callable[..., Any]:
        total, calls = self.total, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total[cat] += time.perf_counter() - t
                calls[cat] += 1
        return timed

    @contextlib.contextmanager
    def active(self, sched: Any) -> Iterator["StepProfile"]:
        from sglang.srt.layers import activation, layernorm, linear, rotary_embedding, vocab_parallel
        from sglang.srt.managers.scheduler import Scheduler
        from sglang.srt.mem_cache.memory_pool import KVPool

        backend = type(sched.runner.attn_backend)
        targets = [(linear.MergedLinear, "forward", "linear GEMMs"), (linear.RowParallelLinear, "forward", "linear GEMMs"),
                   (vocab_parallel.ParallelLMHead, "forward", "LM head"),
                   (vocab_parallel.VocabParallelEmbedding, "forward", "embedding"),
                   (KVPool, "set_kv", "KV write"), (backend, "forward_decode", "attention"),
                   (backend, "forward_extend", "attention"), (layernorm.RMSNorm, "forward", "norms"),
                   (rotary_embedding.RotaryEmbedding, "forward", "rotary"), (activation.SiluAndMul, "forward", "activation"),
                   (Scheduler, "_sample_and_update", "sampling and bookkeeping")]
        saved = []
        for cls, name, cat in targets:
            orig = cls.__dict__.get(name)
            if orig is None:
                continue
            saved.append((cls, name, orig))
            setattr(cls, name, self._wrap(orig, cat))
        try:
            yield self
        finally:
            for cls, name, orig in saved:
                setattr(cls, name, orig)

    def table(self, wall_s: float, steps: int) -> dict[str, Any]:
        per = {c: self.total.get(c, 0.0) / steps * 1e3 for c in self.CATEGORIES}
        per["python and scheduling"] = max(0.0, wall_s / steps * 1e3 - sum(per.values()))
        return {"profiled_step_ms": round(wall_s / steps * 1e3, 2),
                "ms_per_step": {k: round(v, 3) for k, v in per.items()},
                "share": {k: round(v / (wall_s / steps * 1e3), 3) for k, v in per.items()}}


def profile_decode(sched: Any, prompts: list[list[int]], steps: int) -> dict[str, Any]:
    _submit(sched, prompts, 2 * steps + 4)
    _prefill_all(sched)
    for _ in range(2):
        sched.step()
    t = time.perf_counter()
    for _ in range(steps):
        sched.step()
    plain = (time.perf_counter() - t) / steps
    prof = StepProfile()
    with prof.active(sched):
        t = time.perf_counter()
        for _ in range(steps):
            sched.step()
        wall = time.perf_counter() - t
    while sched.has_work():
        sched.step()
    return {"step_ms": round(plain * 1e3, 2), **prof.table(wall, steps)}


def profile_prefill(sched: Any, prompts: list[list[int]]) -> dict[str, Any]:
    _submit(sched, prompts, 1)
    t = time.perf_counter()
    _prefill_all(sched)
    plain = time.perf_counter() - t
    while sched.has_work():
        sched.step()
    _submit(sched, prompts, 1)
    prof = StepProfile()
    with prof.active(sched):
        t = time.perf_counter()
        _prefill_all(sched)
        wall = time.perf_counter() - t
    while sched.has_work():
        sched.step()
    row = prof.table(wall, 1)
    return {"prompts": len(prompts), "tokens": sum(map(len, prompts)), "prefill_ms": round(plain * 1e3, 1),
            "profiled_prefill_ms": row["profiled_step_ms"], "ms": row["ms_per_step"], "share": row["share"]}


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServerArgs.add_cli_args(ap)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--buffer-mib", type=int, default=1024, help="size of the copied buffer (well above the caches)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--profile", nargs="*", default=None,
                    help="batch sizes to profile a decode step at, and/or 'prefill' (the offline set: 32 prompts "
                         "of 16-256 tokens)")
    ap.add_argument("--profile-steps", type=int, default=16)
    a = ap.parse_args()
    sched, tok = engine_from_cli(a)
    import torch
    wbytes = weight_bytes(sched.runner.model)
    prompt = make_prompts(tok, 1, a.input_len, a.input_len, seed=1)
    decode_step_s(sched, [p[:16] for p in prompt], 4)  # warm-up
    bws, steps = [], []
    for _ in range(a.repeats):  # interleaved: both see the same load
        bws.append(measure_bandwidth(a.buffer_mib))
        steps.append(decode_step_s(sched, prompt, a.output_len - 1))
    copy_bw = max(b["copy_gb_s"] for b in bws)
    read_bw = max(b["read_gb_s"] for b in bws)
    tok_s = 1.0 / min(steps)
    roofline = copy_bw * 1e9 / wbytes
    result: dict[str, Any] = {
        "benchmark": "roofline", "model": sched.runner.files.display_name, "dtype": str(sched.runner.dtype),
        "device": str(sched.runner.device), "threads": torch.get_num_threads(), "repeats": a.repeats,
        "weight_bytes": wbytes, "bandwidth_copy_gb_s": copy_bw, "bandwidth_read_gb_s": read_bw,
        "roofline_tok_s": round(roofline, 2), "roofline_read_tok_s": round(read_bw * 1e9 / wbytes, 2),
        "batch1_decode_tok_s": round(tok_s, 2), "batch1_decode_tok_s_median": round(1.0 / sorted(steps)[len(steps) // 2], 2),
        "percent_of_roofline": round(100 * tok_s / roofline, 1),
        "effective_weight_gb_s": round(tok_s * wbytes / 1e9, 2),
    }
    if a.profile is not None:
        prof: dict[str, Any] = {}
        for item in a.profile or ["1", "32", "prefill"]:
            if item == "prefill":
                prof["prefill"] = profile_prefill(sched, make_prompts(tok, 32, 16, 256))
            else:
                bs = int(item)
                prof[f"decode_bs{bs}"] = profile_decode(sched, make_prompts(tok, bs, a.input_len, a.input_len, seed=bs),
                                                        a.profile_steps)
        result["profile"] = prof
    return result


if __name__ == "__main__":
    run_cli(main)
