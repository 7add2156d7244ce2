"""Benchmarks of the storage and classification service (``python -m sglang.srt.attention_sidecar``);
each prints one JSON object.

    python -m sglang.test.sidecar_bench ingest --n 300000
    python -m sglang.test.sidecar_bench classify --discovery-dir ./discovery_artifacts

``ingest``: a fresh service subprocess and a real SQLite file; one PUSH socket sends ``n``
pre-encoded fingerprint frames as fast as ZMQ accepts them (blocking at the high-water mark,
so nothing is dropped); the clock stops when every frame is committed. Then the database is
checked: exactly ``n`` rows, every step once.

``classify``: sequential single-vector ``POST /classify`` over one keep-alive connection
(client-side latency, HTTP included) and the in-process ``ArtifactSet.classify`` call alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np


def _pcts(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "mean_ms": round(float(a.mean()), 4), "n": len(xs)}


def _proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ingest(n: int, flush_size: int) -> dict[str, Any]:
    import zmq

    from sglang.test.sidecar_service import ServiceProcess, free_port
    from sglang.test.synthetic import make_clusters

    X, _ = make_clusters(min(n, 20000), seed=0)
    frames = [json.dumps({"version": 1, "kind": "step", "request_id": f"req-{i // 64}", "step": i,
                          "vector": X[i % len(X)].tolist(), "model": "bench", "timestamp": 1.7e9}).encode()
              for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "bench.db")
        port = free_port()
        with ServiceProcess(["-m", "sglang.srt.attention_sidecar", "--db", db, "--zmq-bind", "tcp://127.0.0.1:*",
                             "--port", str(port), "--flush-size", str(flush_size)], port) as svc:
            sock = zmq.Context.instance().socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.connect(svc.zmq_endpoint)
            time.sleep(0.2)  # connection established before the clock starts
            cpu0 = _proc_cpu_s(svc.proc.pid)
            sent_at: list[float] = []

            def send() -> None:
                for f in frames:
                    sock.send(f)
                sent_at.append(time.perf_counter())

            t0 = time.perf_counter()
            t = threading.Thread(target=send)
            t.start()
            received_at = None
            while True:
                s = svc.get("/stats").json()
                if received_at is None and s["received"] >= n:
                    received_at = time.perf_counter()
                if s["stored"] >= n:
                    break
                time.sleep(0.05)  # polling costs the service CPU too: keep it rare
            t_stored = time.perf_counter()
            cpu_s = _proc_cpu_s(svc.proc.pid) - cpu0
            t.join()
            sock.close(linger=0)
            final = svc.get("/stats").json()
            svc.terminate()
        conn = sqlite3.connect(db)
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM fingerprints").fetchone()
    wall = t_stored - t0
    return {
        "bench": "ingest", "fingerprints": n, "flush_size": flush_size,
        "send_s": round(sent_at[0] - t0, 3), "all_received_s": round((received_at or t_stored) - t0, 3),
        "all_stored_s": round(wall, 3), "stored_per_s": round(n / wall), "rows_in_db": rows, "distinct_steps": distinct,
        "lost": n - distinct, "rejected": final["rejected"], "flushes": final["flushes"],
        "last_flush_ms": final["last_flush_ms"],
        # CPU time the service spent (its /stats answers included): what one free core sustains
        "service_cpu_s": round(cpu_s, 3), "service_cpu_us_per_fingerprint": round(cpu_s / n * 1e6, 2),
        "one_free_core_capacity_per_s": round(n / cpu_s) if cpu_s > 0 else None,
        "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
    }


def bench_classify(directory: str, requests: int) -> dict[str, Any]:
    import httpx

    from sglang.srt.attention_sidecar.artifacts import load_artifact_set
    from sglang.test.sidecar_service import ServiceProcess, free_port
    from sglang.test.synthetic import make_clusters

    X, _ = make_clusters(requests, seed=123)
    t = time.perf_counter()
    arts = load_artifact_set(directory)
    load_s = time.perf_counter() - t
    inproc = []
    for x in X:
        t = time.perf_counter()
        arts.classify(x[None, :])
        inproc.append(time.perf_counter() - t)
    port = free_port()
    with ServiceProcess(["-m", "sglang.srt.attention_sidecar", "--discovery-dir", directory, "--zmq-bind", "none",
                         "--port", str(port)], port) as svc, httpx.Client(base_url=svc.url, timeout=30) as c:
        for x in X[:50]:  # warm-up
            c.post("/classify", json={"vector": x.tolist()})
        lat = []
        for x in X:
            body = json.dumps({"vector": x.tolist()})
            t = time.perf_counter()
            r = c.post("/classify", content=body, headers={"content-type": "application/json"})
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        health = []  # the same HTTP round trip doing nothing: the floor set by HTTP and scheduling
        for _ in range(len(X)):
            t = time.perf_counter()
            c.get("/health")
            health.append(time.perf_counter() - t)
        svc.terminate()
    return {"bench": "classify", "artifact_points": int(len(arts.index_pca)), "clusters": len(arts.centroids),
            "artifact_load_s": round(load_s, 3), "http": _pcts(lat), "in_process": _pcts(inproc),
            "http_health_baseline": _pcts(health),
            "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sglang.test.sidecar_bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ingest")
    a.add_argument("--n", type=int, default=300_000)
    a.add_argument("--flush-size", type=int, default=8192)
    b = sub.add_parser("classify")
    b.add_argument("--discovery-dir", required=True)
    b.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args(argv)
    if args.cmd == "ingest":
        print(json.dumps(bench_ingest(args.n, args.flush_size)))
    else:
        print(json.dumps(bench_classify(args.discovery_dir, args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
