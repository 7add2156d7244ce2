"""The decode GEMMs of a model on CPU through each matmul path, side by side.

    python -m sglang.bench_cpu_gemm                            # SmolLM2-135M's shapes, 1..2048 rows
    python -m sglang.bench_cpu_gemm --rows 1 32 --rounds 3

One "pass" multiplies ``--rows`` rows by every weight of a model's layer stack (q/k/v, o,
gate/up, down for each of ``--layers`` layers, each layer its own random weights, so
they stream from memory as in a real step) and then by the LM head: the matmuls of one
decode step (or, at prefill sizes, of one chunk). Paths, in the same process, interleaved
round by round:

- ``packed``: sgl_kernel's K-major panels (``cpu_ops.packed_linear``), the engine's path
  for float32 up to 256 rows;
- ``onednn``: oneDNN with the weight prepacked (``torch.ops.mkldnn``), the earlier default;
- ``mkl``: ``F.linear`` on the weights as loaded, the engine's path above 256 rows;
- ``small``: sgl_kernel's small GEMM on the weights as loaded (up to 64 rows), the
  engine's path for 1..16 rows with ``--disable-cpu-weight-prepack``.

The OpenMP paths park the pool first, as the engine does. Reports the fastest pass of
``--repeats`` in each round, in ms, and GFLOP/s. Prints one JSON object.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see managers/launch.py

import argparse
import time
from typing import Any, Callable

from sglang.bench_utils import run_cli


def layer_shapes(a: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """(N, K) of each linear of a layer: merged q/k/v, o, merged gate/up, down."""
    q, kv = a.q_heads * a.head_dim, a.kv_heads * a.head_dim
    return {"qkv": (q + 2 * kv, a.hidden), "o": (a.hidden, q), "gate_up": (2 * a.intermediate, a.hidden),
            "down": (a.hidden, a.intermediate)}


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128, 256, 512, 2048])
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--q-heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args()
    for name in ("hidden", "intermediate", "q_heads", "kv_heads", "head_dim", "layers", "vocab", "rounds", "repeats"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if min(a.rows) < 1:
        raise ValueError("--rows must be >= 1")

    import torch
    import torch.nn.functional as F
    from sgl_kernel import cpu_ops

    if a.threads:
        torch.set_num_threads(a.threads)
    if not cpu_ops.small_gemm_available():
        raise ValueError("sgl_kernel's CPU GEMM extension does not build here")
    g = torch.Generator().manual_seed(0)
    shapes = layer_shapes(a)
    shapes_all = [shapes[n] for _ in range(a.layers) for n in shapes] + [(a.vocab, a.hidden)]
    weights = [torch.randn(n, k, generator=g) * 0.02 for n, k in shapes_all]
    panels = [cpu_ops.pack_panels(w) for w in weights]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 32) for w in weights]
    flop_per_row = 2 * sum(n * k for n, k in shapes_all)

    def onednn_mm(x: torch.Tensor, i: int) -> torch.Tensor:
        cpu_ops.small_gemm_park()
        return torch.ops.mkldnn._linear_pointwise(x, onednn[i], None, "none", [], "")

    def mkl_mm(x: torch.Tensor, i: int) -> torch.Tensor:
        cpu_ops.small_gemm_park()
        return F.linear(x, weights[i])

    paths: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
        "packed": lambda x, i: cpu_ops.packed_linear(x, panels[i], weights[i].shape[0]),
        "onednn": onednn_mm,
        "mkl": mkl_mm,
        "small": lambda x, i: cpu_ops.small_linear(x, weights[i]),
    }
    results = []
    for m in a.rows:
        xs = {k: torch.randn(m, k, generator=g) for k in {k for _, k in shapes_all}}
        names = [n for n in paths if n != "small" or m <= 64]
        ref = F.linear(xs[a.hidden], weights[-1])
        for n in names:  # every path computes the same products
            torch.testing.assert_close(paths[n](xs[a.hidden], len(weights) - 1), ref, rtol=1e-3, atol=1e-3)
        best: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(a.rounds):
            for n in names:
                fn = paths[n]
                times = []
                for _ in range(a.repeats):
                    t = time.perf_counter()
                    for i, (_, k) in enumerate(shapes_all):
                        fn(xs[k], i)
                    times.append(time.perf_counter() - t)
                best[n].append(min(times))
        row: dict[str, Any] = {"rows": m}
        for n in names:
            row[f"{n}_ms"] = [round(t * 1e3, 2) for t in best[n]]
            row[f"{n}_gflop_s"] = round(flop_per_row * m / min(best[n]) / 1e9, 1)
        results.append(row)
    return {"benchmark": "cpu_gemm", "threads": torch.get_num_threads(), "layers": a.layers,
            "shapes": {**{n: list(s) for n, s in shapes.items()}, "lm_head": [a.vocab, a.hidden]},
            "weight_bytes": 4 * sum(n * k for n, k in shapes_all), "results": results}


if __name__ == "__main__":
    run_cli(main)
