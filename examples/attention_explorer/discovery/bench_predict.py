"""Latency of the rapids sidecar's POST /predict (batch and online mode); prints JSON.

    python examples/attention_explorer/discovery/bench_predict.py --points 5000 --requests 2000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rapids_sidecar.py")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args(argv)
    import httpx

    from sglang.test.sidecar_service import ServiceProcess, fingerprint_frame, free_port, push_frames
    from sglang.test.synthetic import make_clusters

    X, _ = make_clusters(args.points, seed=7)
    Q, _ = make_clusters(args.requests, seed=8)
    for mode in (["--recluster-interval", "3600"], ["--online"]):
        port = free_port()
        with ServiceProcess([SCRIPT, "--zmq-bind", "tcp://127.0.0.1:*", "--port", str(port), *mode], port) as svc:
            t0 = time.perf_counter()
            push_frames(svc.zmq_endpoint, (fingerprint_frame(x) for x in X))
            key = "online_points" if "--online" in mode else "received"
            svc.wait_for(lambda s: s[key] >= args.points, timeout=600)
            absorb_s = time.perf_counter() - t0
            rc = svc.post("/recluster").json()
            lat = []
            with httpx.Client(base_url=svc.url, timeout=30) as c:
                for q in Q[:50]:
                    c.post("/predict", json={"vector": q.tolist()})
                for q in Q:
                    body = json.dumps({"vector": q.tolist()})
                    t = time.perf_counter()
                    r = c.post("/predict", content=body, headers={"content-type": "application/json"})
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200
            stats = svc.get("/stats").json()
            svc.terminate()
        a = np.asarray(lat) * 1e3
        print(json.dumps({"bench": "predict", "mode": stats["mode"], "points": args.points,
                          "ingest_s": round(absorb_s, 3), "ingest_per_s": round(args.points / absorb_s),
                          "recluster": rc, "clusters": stats["clusters"],
                          "p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
                          "requests": len(lat), "cpu_count": os.cpu_count()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
