"""rapids_sidecar.py as a real subprocess: batch and online clustering, traits/hints, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from sgl_kernel import zones
from sglang.test import synthetic
from sglang.test.sidecar_service import ServiceProcess, fingerprint_frame, free_port, push_frames

pytestmark = pytest.mark.timeout(180)
SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "attention_explorer",
                                      "rapids_sidecar.py"))
N = 1200


def _sidecar(*args: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess([SCRIPT, "--zmq-bind", "tcp://127.0.0.1:*", "--port", str(port), *args], port)


def _check_clusters_follow_zones(svc: ServiceProcess) -> None:
    clusters = svc.get("/centroids").json()["clusters"]
    for c in clusters:
        r = zones.classify(c["centroid"])
        assert c["zone"] == r.zone and c["traits"] == zones.traits(c["centroid"])
        assert {k: c["sampling_hints"][k] for k in ("temperature", "top_p")} == zones.SAMPLING_HINTS[r.zone]
    assert {c["zone"] for c in clusters} == set(zones.ZONES)  # the five prototypes land in five zones


def test_batch_mode_recovers_known_clusters(tmp_path) -> None:
    X, y = synthetic.make_clusters(N, seed=21)
    with _sidecar("--recluster-interval", "0.5", "--min-cluster-size", "20") as svc:
        before = svc.post("/predict", json={"vector": X[0].tolist()}).json()
        assert before["cluster_id"] == -1 and before["basis"] == "vector"  # no clusters yet: the vector's own zone
        assert before["zone"] == zones.classify(X[0]).zone
        push_frames(svc.zmq_endpoint, (fingerprint_frame(x, step=i) for i, x in enumerate(X)))
        svc.wait_for(lambda s: s["received"] == N)
        r = svc.post("/recluster").json()
        assert r["reclustered"] and r["points"] == N and r["clusters"] == 5
        svc.wait_for(lambda s: s["reclusters"] >= 2)  # the timer re-clusters too
        s = svc.get("/stats").json()
        assert s["buffered"] == N and s["clusters"] == 5 and s["backend"] in ("hdbscan", "cuml", "sklearn")
        res = svc.post("/predict", json={"vectors": X.tolist()}).json()["results"]
        assert adjusted_rand_score(y, [p["cluster_id"] for p in res]) > 0.9
        p = res[0]
        assert {"cluster_id", "zone", "confidence", "traits", "sampling_hints", "distance"} <= set(p)
        assert 0 < p["confidence"] <= 1 and p["distance"] >= 0
        _check_clusters_follow_zones(svc)
        far = svc.post("/predict", json={"vector": [5.0] * 20}).json()
        assert far["cluster_id"] == -1 and far["nearest_cluster_id"] is not None


def test_online_mode_recovers_known_clusters(tmp_path) -> None:
    X, y = synthetic.make_clusters(N, seed=22)
    with _sidecar("--online", "--online-threshold", "2.0") as svc:
        push_frames(svc.zmq_endpoint, (fingerprint_frame(x) for x in X))
        svc.wait_for(lambda s: s["received"] == N)
        s = svc.wait_for(lambda s: s["online_points"] == N)
        assert s["mode"] == "online" and s["clusters"] == 5
        res = svc.post("/predict", json={"vectors": X.tolist()}).json()["results"]
        assert adjusted_rand_score(y, [p["cluster_id"] for p in res]) > 0.9
        _check_clusters_follow_zones(svc)
        sizes = sorted(c["size"] for c in svc.get("/centroids").json()["clusters"])
        assert sum(sizes) >= 0.95 * N


def test_bad_input_is_counted_and_rejected() -> None:
    with _sidecar("--online") as svc:
        push_frames(svc.zmq_endpoint, [b"\x00\x01", b"{}", json.dumps({"vector": [1] * 3}).encode(),
                                       b'{"vector": [Infinity' + b", 0" * 19 + b"]}", [b"a", b"b"],
                                       fingerprint_frame([0.05] * 20)])
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= 6)
        assert s["received"] == 1 and s["rejected"] == 5
        assert s["rejected_by_reason"] == {"bad_json": 1, "missing_vector": 1, "bad_vector": 1, "non_finite": 1,
                                           "multipart": 1}
        for body, param in [(b"nope", None), (b'{"vector": [1, 2]}', "vector"),
                            (b'{"vector": [NaN' + b", 0" * 19 + b"]}", "vector"), (b'{"vectors": []}', "vectors"),
                            (b'{"vector": ' + json.dumps(["a"] * 20).encode() + b"}", "vector")]:
            r = svc.post("/predict", content=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert svc.get("/stats").json()["http_rejected"] == 5
        assert svc.get("/health").status_code == 200


@pytest.mark.parametrize("args", [["--port", "-1"], ["--recluster-interval", "0"], ["--online-threshold", "-2"],
                                  ["--zmq-bind", "nonsense://x"]])
def test_bad_flags_exit_2(args) -> None:
    r = subprocess.run([sys.executable, SCRIPT, "--port", str(free_port()), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr
