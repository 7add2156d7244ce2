"""Discovery wall time at several sizes; prints one JSON object per size.

    python examples/attention_explorer/discovery/bench_discovery.py --sizes 10000 100000 --keep ./bench_out

Each size: a synthetic fingerprint database with 5 known behaviours (``synthetic.make_clusters``)
and one ``run_discovery.py`` subprocess, timed from start to exit (imports and UMAP's numba
warm-up included, as a user would see it). Also reports the adjusted Rand index of the found
clusters against the known ones.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--keep", default=None, help="keep databases and artifact folders under this folder")
    args = ap.parse_args(argv)
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    from sglang.test import synthetic
    from sglang.test.sidecar_service import subprocess_env

    root = args.keep or tempfile.mkdtemp(prefix="bench-discovery-")
    os.makedirs(root, exist_ok=True)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_discovery.py")
    for n in args.sizes:
        db, out = os.path.join(root, f"fp-{n}.db"), os.path.join(root, f"artifacts-{n}")
        if os.path.exists(db):
            os.remove(db)
        X, y = synthetic.make_clusters(n, seed=n)
        synthetic.write_db(db, X, y)
        t0 = time.perf_counter()
        # synthetic.write_db stores rows without a version: version 1
        p = subprocess.run([sys.executable, script, "--db", db, "--output-dir", out, "--no-progress",
                            "--fingerprint-version", "1"],
                           capture_output=True, text=True, env=subprocess_env())
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(json.dumps({"size": n, "error": p.stderr[-2000:]}))
            return 1
        res = json.loads(p.stdout.strip().splitlines()[-1])
        pts = pq.read_table(os.path.join(out, "points.parquet"), columns=["request_id", "cluster_id"]).to_pydict()
        truth = [int(r.split("-")[0][1:]) for r in pts["request_id"]]
        print(json.dumps({"bench": "discovery", "size": n, "wall_s": round(wall, 2), "stages_s": res["timings_s"],
                          "n_clusters": res["n_clusters"], "noise_fraction": res["noise_fraction"],
                          "ari_vs_truth": round(float(adjusted_rand_score(truth, pts["cluster_id"])), 4),
                          "artifact_mb": round(sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2**20, 2),
                          "cpu_count": os.cpu_count(), "output_dir": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
