"""rapids_sidecar.py follows the fingerprint version it receives: its clusters hold one version
(--fingerprint-version, or the first message's), messages of another version are rejected and
counted, /predict of another version is a 400 naming the field, and zones are read with the
clusters' version."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sgl_kernel import zones
from sglang.test import synthetic
from sglang.test.sidecar_service import ServiceProcess, fingerprint_frame, free_port, push_frames

pytestmark = pytest.mark.timeout(180)
SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "attention_explorer",
                                      "rapids_sidecar.py"))


def _sidecar(*args: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess([SCRIPT, "--zmq-bind", "tcp://127.0.0.1:*", "--port", str(port), *args], port)


def _between(n: int = 1, seed: int = 0) -> np.ndarray:
    """Near-uniform fingerprints with an entropy between the versions' diffuse thresholds: their
    zone depends on the version they are read as."""
    t1, t2 = zones.thresholds(1)[0]["diffuse"], zones.thresholds(2)[0]["diffuse"]
    if t1 == t2:
        pytest.skip("the version 1 and 2 diffuse thresholds are equal")
    rng = np.random.default_rng(seed)
    hists = rng.dirichlet(np.full(16, 400.0 / 16), size=n)
    X = np.array([zones.fingerprint_from_hist(h, (t1 + t2) / 2) for h in hists])
    assert zones.classify(X[0], 1).zone != zones.classify(X[0], 2).zone
    return X


def _error(resp, code: str) -> dict:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert (err["param"], err["code"]) == ("fingerprint_version", code), err
    return err


def test_auto_follows_the_first_version_and_refuses_the_other() -> None:
    X, _ = synthetic.make_clusters(300, n_clusters=3, seed=51)
    B = _between(60, seed=52)
    with _sidecar("--online", "--online-min-size", "3") as svc:
        assert svc.get("/stats").json()["fingerprint_version"] is None  # nothing received yet
        assert svc.get("/centroids").json()["fingerprint_version"] is None
        # before any message: a /predict says which version it sends, or is read as version 1
        p = svc.post("/predict", json={"vector": B[0].tolist(), "fingerprint_version": 2}).json()
        assert p["zone"] == zones.classify(B[0], 2).zone and p["fingerprint_version"] == 2
        assert svc.post("/predict", json={"vector": B[0].tolist()}).json()["zone"] == zones.classify(B[0], 1).zone

        v2 = [fingerprint_frame(x, fingerprint_version=2) for x in np.vstack([X, B])]
        push_frames(svc.zmq_endpoint, v2[:1])  # the first message fixes the version
        svc.wait_for(lambda s: s["received"] == 1)
        v1 = [fingerprint_frame(x) for x in X[:40]] + [fingerprint_frame(x, fingerprint_version=1) for x in X[40:50]]
        push_frames(svc.zmq_endpoint, v2[1:] + v1)
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= len(v2) + len(v1))
        assert (s["received"], s["rejected"]) == (len(v2), len(v1)) and s["fingerprint_version"] == 2
        assert s["rejected_by_reason"] == {"fingerprint_version_mismatch": len(v1)}
        assert any("this sidecar clusters version 2" in e for e in s["last_rejections"])

        body = svc.get("/centroids").json()
        assert body["fingerprint_version"] == 2 and len(body["clusters"]) >= 4
        for c in body["clusters"]:  # zones with version 2's thresholds
            assert c["zone"] == zones.classify(c["centroid"], 2).zone and c["traits"] == zones.traits(c["centroid"], 2)
        assert zones.classify(B.mean(0), 2).zone in {c["zone"] for c in body["clusters"]}

        said = svc.post("/predict", json={"vectors": B[:5].tolist(), "fingerprint_version": 2}).json()["results"]
        unsaid = svc.post("/predict", json={"vectors": B[:5].tolist()}).json()["results"]
        assert said == unsaid and all(r["fingerprint_version"] == 2 and r["cluster_id"] >= 0 for r in said)
        far = svc.post("/predict", json={"vector": [3.0] * 20}).json()  # no cluster: its own zone, version 2
        assert far["cluster_id"] == -1 and far["zone"] == zones.classify([3.0] * 20, 2).zone

        err = _error(svc.post("/predict", json={"vector": B[0].tolist(), "fingerprint_version": 1}),
                     "fingerprint_version_mismatch")
        assert "version 2" in err["message"]
        for bad in (3, "2", 2.0, True):
            _error(svc.post("/predict", json={"vector": B[0].tolist(), "fingerprint_version": bad}),
                   "invalid_fingerprint_version")
        st = svc.get("/stats").json()
        assert st["http_rejected_by_reason"] == {"fingerprint_version_mismatch": 1, "invalid_fingerprint_version": 4}


def test_an_explicit_version_rejects_every_other_from_the_start() -> None:
    X, _ = synthetic.make_clusters(200, seed=53)
    with _sidecar("--recluster-interval", "3600", "--min-cluster-size", "10", "--fingerprint-version", "1") as svc:
        assert svc.get("/centroids").json()["fingerprint_version"] == 1
        frames = [fingerprint_frame(x, fingerprint_version=2) for x in X[:20]] + [fingerprint_frame(x) for x in X]
        push_frames(svc.zmq_endpoint, frames)
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= len(frames))
        assert (s["received"], s["rejected"], s["buffered"]) == (len(X), 20, len(X))
        assert s["rejected_by_reason"] == {"fingerprint_version_mismatch": 20}
        r = svc.post("/recluster").json()
        assert r["reclustered"] and r["points"] == len(X)
        for c in svc.get("/centroids").json()["clusters"]:
            assert c["zone"] == zones.classify(c["centroid"], 1).zone
        _error(svc.post("/predict", json={"vector": X[0].tolist(), "fingerprint_version": 2}),
               "fingerprint_version_mismatch")


def test_bad_version_flag_exits_2() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, SCRIPT, "--port", str(free_port()), "--fingerprint-version", "3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--fingerprint-version" in r.stderr
