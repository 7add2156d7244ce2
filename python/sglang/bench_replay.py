"""Dense attention replay: time and peak memory of ``Scheduler.replay`` (one layer, all
heads) for sequences up to 2,048 tokens, with the bundled model on this machine.

    python -m sglang.bench_replay [--tokens 512 2048] [--layers 1]

Prints JSON: per length, seconds (best of --repeats), the peak of the bytes the replay
itself allocated on the CPU (torch's profiler memory events, so independent of what the
process held before), and the size of the float16 result.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _peak_alloc_bytes(fn: Any) -> tuple[Any, int]:
    """Run fn under the profiler; the peak of the running sum of its CPU allocations."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    level = peak = 0
    for e in events:  # self allocations (+) and frees (-) of each op, in time order
        level += e.self_cpu_memory_usage
        peak = max(peak, level)
    del torch
    return out, peak


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--layers", type=int, default=1, help="how many layers (the last ones)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    from sglang.srt.limits import MAX_REPLAY_TOKENS

    if any(not 1 <= t <= MAX_REPLAY_TOKENS for t in a.tokens) or a.layers < 1 or a.repeats < 1:
        ap.error(f"--tokens in 1..{MAX_REPLAY_TOKENS}; --layers and --repeats at least 1")
    from sglang.bench_utils import make_prompts
    from sglang.srt.managers.io_struct import ReplayReq
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.model_loader.tokenizer import load_tokenizer
    from sglang.srt.server_args import ServerArgs

    sched = Scheduler(ServerArgs(max_total_tokens=max(a.tokens) + 64))
    tok = load_tokenizer(sched.runner.files)
    L = sched.cfg.num_layers
    layers = list(range(L - a.layers, L))
    rows = []
    for t in a.tokens:
        ids = make_prompts(tok, 1, t, t)[0]
        req = ReplayReq("bench", ids, layers, None, False)
        sched.replay(req)  # warm-up
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = sched.replay(req)
            best = min(best, time.perf_counter() - t0)
        _, peak = _peak_alloc_bytes(lambda: sched.replay(req))
        rows.append({"tokens": t, "layers": len(layers), "heads": sched.cfg.num_heads, "seconds": round(best, 3),
                     "peak_alloc_mib": round(peak / 2**20, 1), "result_mib": round(out.probs.nbytes / 2**20, 1)})
    print(json.dumps({"benchmark": "attention_replay", "model": sched.runner.files.display_name, "results": rows},
                     indent=1))


if __name__ == "__main__":
    main()
