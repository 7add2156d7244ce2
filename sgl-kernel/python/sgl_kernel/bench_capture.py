"""Measure attention capture's time and extra memory as the context grows.

    python -m sgl_kernel.bench_capture --context-lens 1024,4096,...,1048576 --json

One JSON line per context length: ``context_len``, ``workspace_bytes`` and ``ms`` (on CPU also
``peak_alloc_bytes``, ``rss_workspace_bytes`` and ``noise_bytes``). Each length runs in a
fresh subprocess. ``workspace_bytes`` is measured, not computed: the most bytes the call
held at one time beyond what existed before it and beyond the bytes of its result.

* CPU (``profiled_workspace``, deterministic: the same bytes on every run of a given torch build):
  the call runs under ``torch.profiler`` with ``profile_memory=True``, which records every
  allocation (+bytes) and free (-bytes) that goes through torch's CPU allocator. In time
  order their running sum is what the op holds; its peak is ``peak_alloc_bytes`` and
  ``workspace_bytes`` = that peak - the result's bytes. Each allocation and free is its own
  ``[memory]`` event, so nothing is counted twice (an op's non-self memory would repeat
  its children's) and a temporary freed inside an op still counts. Without the raw events
  the ops' self memory (``self_cpu_memory_usage``) is summed the same way. Memory that
  does not go through torch's allocator (a BLAS library's private buffers) is not seen.
* CPU, as a cross-check (``rss_workspace_bytes``, ``rss_workspace``): the process's peak
  resident memory is reset (``/proc/self/clear_refs``) right before the call, and workspace
  = peak RSS during the call - RSS before it - result bytes - growth of file-backed RSS
  (library code paged in). glibc is told to mmap every block above 64 KiB while measuring
  (see ``_mmap_threshold``) and to trim its heap just before. The kernel's RSS counters
  are approximate: ``noise_bytes`` says by how much.
* CUDA: ``torch.cuda`` allocator statistics, peak allocated during the call - allocated
  before - result bytes.

On a GPU a last line (``"kind": "attention_vs_capture"``) compares Triton decode
attention, SDPA over the gathered cache and capture at batch 32 x 4k keys.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from sgl_kernel.capture import CaptureResult, attention_capture, decode_capture


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_noise_bytes() -> int:
    """How far the kernel's RSS counters may be off when read. Since Linux 6.2 they are
    per-CPU counters that each CPU folds in after max(32, 2 x CPUs) pages, so a reading can
    miss up to CPUs x that many pages: 256 KiB on 2 CPUs, 2 MiB on 16. A measured workspace
    smaller than this is indistinguishable from zero."""
    cpus = os.cpu_count() or 1
    return cpus * max(32, 2 * cpus) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _mmap_threshold(nbytes: int) -> bool:
    """Set glibc's mmap threshold (False when not glibc).

    During the memory measurement every block above 64 KiB gets its own mmap, so freed
    tiles go back to the OS at once and the peak RSS counts what the op holds at one
    time, not how glibc's heap happened to fragment. Timing runs afterwards with a large
    threshold, which is where glibc's own dynamic threshold settles for repeated tiles.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _result_bytes(res: object) -> int:
    if isinstance(res, torch.Tensor):
        return res.numel() * res.element_size()
    items = res.__dict__.values() if hasattr(res, "__dict__") else ()
    return sum(v.numel() * v.element_size() for v in items if isinstance(v, torch.Tensor))


def _inputs(n_keys: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: str, seed: int):
    g = torch.Generator(device="cpu").manual_seed(seed)
    # Filled in place: no transient copy of the (possibly multi-GB) cache.
    k = torch.empty(n_keys, kv_heads, head_dim, dtype=dtype, device=device)
    if device == "cpu":
        k.normal_(generator=g)
    else:
        k.normal_()
    table = torch.randperm(n_keys, generator=g).to(torch.int32).reshape(1, n_keys).to(device)
    q = torch.randn(1, heads, head_dim, generator=g).to(dtype=dtype, device=device)
    return q, k, table


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _memory_events(prof) -> list[tuple[int, int]]:
    """(start time, bytes) of every CPU allocation (+) and free (-) the profiler saw."""
    try:
        raw = prof.profiler.kineto_results.events()
    except AttributeError:  # no raw events in this torch: the ops' self memory, summed per op
        return [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage]
    cpu = torch.autograd.DeviceType.CPU
    return [(e.start_ns(), e.nbytes()) for e in raw if e.name() == "[memory]" and e.nbytes() and e.device_type() == cpu]


def profiled_workspace(fn: Callable[[], object]) -> tuple[object, int, int]:
    """Run fn once under torch's profiler; return (its result, workspace bytes, peak bytes).

    peak = the largest running sum, in time order, of the CPU allocations (+) and frees (-)
    made through torch's allocator during the call; workspace = peak - the result's bytes.
    Deterministic: it counts what the op allocates, not what the process holds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        res = fn()
    level = peak = 0
    for _, nbytes in sorted(_memory_events(prof), key=lambda e: e[0]):
        level += nbytes
        peak = max(peak, level)
    return res, max(0, peak - _result_bytes(res)), peak


def rss_workspace(fn: Callable[[], object]) -> tuple[object, int]:
    """Run fn once; (its result, peak RSS growth during the call beyond its result's bytes).
    Approximate (see rss_noise_bytes); best with a small glibc mmap threshold set."""
    gc.collect()
    _malloc_trim()  # free heap memory goes back now, so no trim during the call hides growth
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs); no honest measurement possible")
    before = _proc_kb("VmRSS") * 1024
    file_before = _proc_kb("RssFile") * 1024
    res = fn()
    # Code pages of torch's libraries faulted in by the call are file-backed RSS, not
    # workspace: take their growth out of the peak. The kernel's RSS counters are
    # approximate (per-thread batching of a few hundred KiB), so expect that much noise.
    peak = _proc_kb("VmHWM") * 1024 - max(0, _proc_kb("RssFile") * 1024 - file_before)
    return res, max(0, peak - before - _result_bytes(res))


PROFILER_METHOD = "torch.profiler CPU memory events (peak of the running sum of allocations - frees)"


def measure_workspace(fn: Callable[[], object], device: str) -> tuple[object, int, str]:
    """Run fn once; return (its result, bytes it held at its peak beyond what existed before
    and beyond its result, how that was measured). CPU: ``profiled_workspace``."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        res = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return res, max(0, peak - before - _result_bytes(res)), "torch.cuda.max_memory_allocated"
    res, workspace, _ = profiled_workspace(fn)
    return res, workspace, PROFILER_METHOD


def _capture_call(heads: int, kv_heads: int, head_dim: int, top_k: int, chunk_size: int, impl: str,
                  device: str) -> Callable[..., CaptureResult]:
    """Decode capture of one query at the last position of a request's whole context."""
    scale = head_dim ** -0.5

    def call(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor) -> CaptureResult:
        return attention_capture(
            q, k, table, torch.zeros(1, dtype=torch.int64, device=device),
            torch.tensor([table.shape[1] - 1], device=device), scale=scale, top_k=top_k,
            chunk_size=chunk_size, impl=impl,
        )
    return call


def capture_workspace(n_keys: int, *, heads: int = 9, kv_heads: int = 9, head_dim: int = 64, top_k: int = 10,
                      chunk_size: int = 2048, dtype: torch.dtype = torch.float32,
                      impl: str = "auto") -> tuple[CaptureResult, int, int]:
    """(result, workspace bytes, peak bytes) of one CPU decode capture over n_keys keys,
    measured with ``profiled_workspace`` in this process (the same numbers as the bench's
    ``workspace_bytes`` and ``peak_alloc_bytes``: they do not depend on what ran before)."""
    call = _capture_call(heads, kv_heads, head_dim, top_k, chunk_size, impl, "cpu")
    call(*_inputs(16, heads, kv_heads, head_dim, dtype, "cpu", 1))  # lazy init outside the measurement
    q, k, table = _inputs(n_keys, heads, kv_heads, head_dim, dtype, "cpu", 0)
    return profiled_workspace(lambda: call(q, k, table))


def run_one(args: argparse.Namespace, n_keys: int) -> dict:
    """Measure one context length in this process (called in a fresh child)."""
    device = args.device
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    call = _capture_call(args.heads, args.kv_heads, args.head_dim, args.top_k, args.chunk_size, args.impl, device)
    exact_malloc = device == "cpu" and _mmap_threshold(64 << 10)
    # Warm up on a tiny separate cache (kernel compilation, thread pools, lazy init), small
    # enough that the measured call cannot reuse its freed tiles and hide its own workspace.
    call(*_inputs(16, args.heads, args.kv_heads, args.head_dim, dtype, device, 1))
    q, k, table = _inputs(n_keys, args.heads, args.kv_heads, args.head_dim, dtype, device, 0)
    extra = {}
    if device == "cpu":
        # RSS first, on a process that has not run the profiler yet; then the exact count.
        _, rss = rss_workspace(lambda: call(q, k, table))
        res, workspace, peak = profiled_workspace(lambda: call(q, k, table))
        method = PROFILER_METHOD + "; rss_workspace_bytes: VmHWM after clear_refs"
        method += ", mmap threshold 64 KiB" if exact_malloc else ""
        extra = {"peak_alloc_bytes": int(peak), "rss_workspace_bytes": int(rss), "noise_bytes": rss_noise_bytes()}
    else:
        res, workspace, method = measure_workspace(lambda: call(q, k, table), device)
    if exact_malloc:
        _mmap_threshold(32 << 20)
    ms = _time_ms(lambda: call(q, k, table), device, args.repeats)
    return {
        "kind": "capture", "context_len": n_keys, "workspace_bytes": int(workspace), "ms": round(ms, 3),
        "device": device if device == "cpu" else torch.cuda.get_device_name(), "impl": args.impl,
        "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim, "dtype": args.dtype,
        "top_k": args.top_k, "chunk_size": args.chunk_size, "queries": 1,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "kv_cache_bytes": k.numel() * k.element_size(), "method": method, **extra,
        "mass_captured": round(float(res.mass_captured[0]), 6),
    }


def attention_vs_capture(args: argparse.Namespace, batch: int = 32, n_keys: int = 4096) -> dict:
    """GPU only: decode attention (Triton, SDPA) vs capture time at batch x n_keys."""
    from sgl_kernel.attention import decode_attention_fwd

    dev, dtype = "cuda", getattr(torch, args.dtype)
    hq, hkv, d = args.heads, args.kv_heads, args.head_dim
    k = torch.randn(batch * n_keys, hkv, d, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    table = torch.randperm(batch * n_keys, device=dev).to(torch.int32).reshape(batch, n_keys)
    q = torch.randn(batch, hq, d, device=dev, dtype=dtype)
    o = torch.empty(batch, hq, d, device=dev, dtype=dtype)
    pool = torch.arange(batch, device=dev)
    lens = torch.full((batch,), n_keys, device=dev, dtype=torch.int64)
    scale = d ** -0.5

    def triton_attn():
        return decode_attention_fwd(q, k, v, o, table, pool, lens, scale=scale, return_lse=True, impl="triton")

    idx = table.long()

    def sdpa():
        kk = k[idx].transpose(1, 2)  # [B, Hkv, L, D], as the torch_native backend gathers
        vv = v[idx].transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q.unsqueeze(2), kk, vv, scale=scale, enable_gqa=True)

    lse = triton_attn()

    def capture_one_pass():
        return decode_capture(q, k, table, pool, lens, scale=scale, top_k=args.top_k, head_lse=lse,
                              chunk_size=args.chunk_size, impl="triton")

    def capture_two_pass():
        return decode_capture(q, k, table, pool, lens, scale=scale, top_k=args.top_k,
                              chunk_size=args.chunk_size, impl="triton")

    for fn in (triton_attn, sdpa, capture_one_pass, capture_two_pass):
        fn()  # compile / warm up
    reps = max(args.repeats, 20)
    t_attn, t_sdpa = _time_ms(triton_attn, dev, reps), _time_ms(sdpa, dev, reps)
    t_cap1, t_cap2 = _time_ms(capture_one_pass, dev, reps), _time_ms(capture_two_pass, dev, reps)
    return {
        "kind": "attention_vs_capture", "batch": batch, "context_len": n_keys, "heads": hq, "kv_heads": hkv,
        "head_dim": d, "dtype": args.dtype, "device": torch.cuda.get_device_name(),
        "triton_attention_ms": round(t_attn, 4), "sdpa_ms": round(t_sdpa, 4),
        "capture_ms": round(t_cap1, 4), "capture_two_pass_ms": round(t_cap2, 4),
        "capture_pct_of_attention": round(100 * t_cap1 / t_attn, 1),
        "capture_two_pass_pct_of_attention": round(100 * t_cap2 / t_attn, 1),
    }


def _parse_lens(text: str) -> list[int]:
    try:
        lens = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--context-lens must be comma-separated integers, got {text!r}") from None
    if not lens or min(lens) < 1:
        raise argparse.ArgumentTypeError("--context-lens needs at least one length, each >= 1")
    return lens


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sgl_kernel.bench_capture", description=__doc__.split("\n\n")[0])
    ap.add_argument("--context-lens", type=_parse_lens, default=_parse_lens("1024,16384,131072,1048576"))
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=9)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                    help="K cache dtype (default: float32 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--impl", choices=["auto", "torch", "triton"], default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads in the measuring process (0 = torch's default); small "
                         "per-tile ops run far slower with 2 threads on a busy 2-core machine")
    ap.add_argument("--json", action="store_true", help="print only JSON lines")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    for name in ("heads", "kv_heads", "head_dim", "top_k", "chunk_size", "repeats"):
        if getattr(args, name) < (0 if name == "top_k" else 1):
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.heads % args.kv_heads:
        ap.error("--heads must be a multiple of --kv-heads")

    if args.child is not None:
        print(json.dumps(run_one(args, args.child)), flush=True)
        return 0

    from tqdm import tqdm

    base = [sys.executable, "-m", "sgl_kernel.bench_capture", "--heads", str(args.heads), "--kv-heads",
            str(args.kv_heads), "--head-dim", str(args.head_dim), "--top-k", str(args.top_k), "--chunk-size",
            str(args.chunk_size), "--dtype", args.dtype, "--device", args.device, "--impl", args.impl,
            "--repeats", str(args.repeats), "--threads", str(args.threads)]
    rows = []
    for n in tqdm(args.context_lens, desc="context lengths", file=sys.stderr, disable=None):
        proc = subprocess.run(base + ["--child", str(n)], capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"bench_capture: context length {n} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row) if args.json else
              f"{n:>9} keys  workspace {row['workspace_bytes'] / 2**20:8.2f} MiB  {row['ms']:9.2f} ms", flush=True)
    if args.device == "cuda":
        row = attention_vs_capture(args)
        print(json.dumps(row) if args.json else json.dumps(row, indent=1), flush=True)
    if not args.json and len(rows) > 1:
        ws = [r["workspace_bytes"] for r in rows]
        print(f"workspace spread: {(max(ws) - min(ws)) / 2**20:.3f} MiB over "
              f"{rows[-1]['context_len'] // rows[0]['context_len']}x more keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
