"""The attention sidecar as a real subprocess: ZMQ ingest into SQLite, HTTP APIs, SIGTERM, reload."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from sglang.srt.attention_sidecar import store
from sglang.test import synthetic
from sglang.test.sidecar_service import ServiceProcess, fingerprint_frame, free_port, push_frames

pytestmark = pytest.mark.timeout(180)


def _service(*args: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(["-m", "sglang.srt.attention_sidecar", "--port", str(port), *args], port)


def _vec(i: int) -> list[float]:
    """A distinct, exactly representable vector per index."""
    v = np.zeros(20)
    v[4 + i % 16] = 1.0
    v[3] = (i % 1000) / 1000.0
    v[19] = i / 1048576.0
    return v.tolist()


def _assert_error(resp, status: int, param) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    return err


def test_ingest_counts_bad_frames_and_stores_good_ones(tmp_path) -> None:
    db = tmp_path / "f.db"
    with _service("--db", str(db), "--zmq-bind", "tcp://127.0.0.1:*", "--flush-interval", "30") as svc:
        good = [fingerprint_frame(_vec(i), step=i, request_id=f"r{i % 3}", session_id="sess", model="m")
                for i in range(100)]
        bad = [b"\xff", b"{oops", b"[1]", b"{}", json.dumps({"vector": [0.1] * 19}).encode(),
               b'{"vector": [NaN' + b", 0" * 19 + b"]}", json.dumps({"vector": [0.0] * 20, "version": 9}).encode(),
               [b'{"vector": [0]}', b"second frame"]]
        push_frames(svc.zmq_endpoint, good[:50] + bad + good[50:])
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= 108)
        assert (s["received"], s["rejected"]) == (100, 8)
        assert s["rejected_by_reason"] == {"bad_json": 2, "not_an_object": 1, "missing_vector": 1, "bad_vector": 1,
                                           "non_finite": 1, "unsupported_version": 1, "multipart": 1}
        assert s["buffered"] == 100 and s["stored"] == 0  # the flush interval has not passed yet
        r = svc.post("/storage/flush")
        assert r.status_code == 200 and r.json()["flushed"] == 100 and r.json()["stored"] == 100
        conn = sqlite3.connect(db)
        rows = conn.execute("SELECT step, request_id, session_id, model, vector FROM fingerprints ORDER BY step").fetchall()
        assert [r[0] for r in rows] == list(range(100))
        assert all(np.array_equal(store.decode_vectors([r[4]])[0], _vec(r[0])) for r in rows)
        assert conn.execute("SELECT n_fingerprints, n_requests FROM sessions").fetchall() == [(100, 3)]
        # HTTP input errors: 400 with an OpenAI-style body naming the field
        _assert_error(svc.post("/classify", content=b"{not json"), 400, None)
        _assert_error(svc.post("/classify", json=[1, 2]), 400, None)
        _assert_error(svc.post("/classify", json={}), 400, "vector")
        _assert_error(svc.post("/classify", json={"vector": [0.1] * 5}), 400, "vector")
        _assert_error(svc.post("/classify", content=b'{"vector": [NaN' + b", 0" * 19 + b"]}"), 400, "vector")
        _assert_error(svc.post("/classify", json={"vectors": [[0.0] * 20, [0.0] * 3]}), 400, "vectors[1]")
        _assert_error(svc.post("/classify", json={"vector": [0.0] * 20, "method": "tsne"}), 400, "method")
        # valid input but nothing to classify against yet
        assert svc.post("/classify", json={"vector": [0.0] * 20}).status_code == 503
        assert svc.get("/stats").json()["http_rejected"] == 7
        assert svc.get("/health").status_code == 200  # still alive after all of it


def test_sigterm_during_ingest_keeps_every_acknowledged_fingerprint(tmp_path) -> None:
    db = tmp_path / "f.db"
    total = 40000
    frames = [fingerprint_frame(_vec(i), step=i, request_id=f"r{i}") for i in range(total)]
    # a long flush interval and a big flush size: most of what is acknowledged sits in the
    # write buffer when SIGTERM arrives, which is exactly what must not be lost
    with _service("--db", str(db), "--zmq-bind", "tcp://127.0.0.1:*", "--flush-interval", "60",
                  "--flush-size", "1000000", "--max-buffer", "1000000") as svc:
        import zmq

        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(svc.zmq_endpoint)
        stop = threading.Event()

        def send() -> None:
            for f in frames:
                if stop.is_set():
                    return
                try:
                    sock.send(f, zmq.NOBLOCK)
                except zmq.Again:
                    stop.wait(0.001)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        seen = svc.wait_for(lambda s: s["received"] >= 5000)
        assert seen["buffered"] > 0
        rc = svc.terminate()  # the sender keeps sending meanwhile
        stop.set()
        t.join()
        sock.close()
        assert rc in (0, -15), svc.stderr
        final = svc.events("shutdown")
        assert final, svc.lines
        acked = final[-1]["received"]
        assert acked >= seen["received"] and final[-1]["buffered"] == 0 and final[-1]["stored"] == acked
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT step, vector FROM fingerprints").fetchall()
    assert len(rows) == acked
    steps = sorted(r[0] for r in rows)
    assert len(set(steps)) == acked  # no duplicates
    assert all(np.array_equal(store.decode_vectors([v])[0], _vec(s)) for s, v in rows[:2000])
    conn.close()
    # restart on the same database: old rows stay, new ones are added
    with _service("--db", str(db), "--zmq-bind", "tcp://127.0.0.1:*") as svc2:
        assert svc2.get("/stats").json()["stored"] == acked
        push_frames(svc2.zmq_endpoint, [fingerprint_frame(_vec(i), step=total + i) for i in range(500)])
        svc2.wait_for(lambda s: s["received"] == 500)
        assert svc2.post("/storage/flush").json()["stored"] == acked + 500
    assert store.count_fingerprints(store.connect(str(db))) == acked + 500


def test_classify_reload_and_corrupted_artifacts(tmp_path, discovery_run) -> None:
    live = tmp_path / "live"
    live.mkdir()
    with _service("--discovery-dir", str(live), "--auto-reload-interval", "0.2", "--zmq-bind", "none") as svc:
        st = svc.get("/discovery/status").json()
        assert st["loaded"] is False and "manifest.json" in st["last_error"]
        # a finished artifact set appearing in the folder is picked up by auto-reload
        for name in os.listdir(discovery_run["artifacts"]):
            shutil.copy(os.path.join(discovery_run["artifacts"], name), live / name)
        st = svc.wait_for(lambda s: s["loaded"], path="/discovery/status")
        run_id = st["current"]["run_id"]
        assert st["current"]["n_clusters"] == 5 and svc.get("/stats").json()["clusters"] == 5

        X, y = synthetic.make_clusters(300, seed=11)  # new points from the same behaviours
        res = svc.post("/classify", json={"vectors": X.tolist(), "explain": True}).json()["results"]
        assert adjusted_rand_score(y, [r["cluster_id"] for r in res]) > 0.9
        centroids = {c["cluster_id"]: c for c in svc.get("/centroids").json()["clusters"]}
        for r in res[:20]:
            c = centroids[r["cluster_id"]]
            assert r["zone"] == c["zone"] and r["traits"] == c["traits"] and r["basis"] == "cluster_centroid"
            assert r["sampling_hints"] == c["sampling_hints"] and 0 <= r["confidence"] <= 1
            assert np.isfinite([r["x"], r["y"], r["distance"]]).all() and len(r["pca_explanation"]) == 4
        single = svc.post("/classify", json={"vector": X[0].tolist()}).json()
        assert single["cluster_id"] == res[0]["cluster_id"] and (single["x"], single["y"]) == (res[0]["x"], res[0]["y"])

        # corrupted file: the reload is refused and the old set keeps serving
        (live / "index.npz").write_bytes(b"garbage" * 100)
        r = svc.post("/discovery/reload")
        err = _assert_error(r, 422, "discovery_dir")
        assert err["type"] == "invalid_artifacts" and "index.npz" in err["message"]
        st = svc.get("/discovery/status").json()
        assert st["loaded"] and st["current"]["run_id"] == run_id and "index.npz" in st["last_error"]
        again = svc.post("/classify", json={"vector": X[0].tolist()}).json()
        assert (again["cluster_id"], again["x"]) == (single["cluster_id"], single["x"])
        # a partial set (file missing) behind a new manifest: auto-reload fails and keeps serving too
        os.remove(live / "centroids.json")
        man = json.loads((live / "manifest.json").read_text())
        man["run_id"] = 999
        (live / "manifest.json").write_text(json.dumps(man))
        svc.wait_for(lambda s: s["reload_failures"] >= 2, path="/discovery/status")
        assert svc.get("/discovery/status").json()["current"]["run_id"] == run_id
        assert svc.post("/classify", json={"vector": X[0].tolist()}).json()["cluster_id"] == single["cluster_id"]
        # repaired: reload succeeds
        for name in os.listdir(discovery_run["artifacts"]):
            shutil.copy(os.path.join(discovery_run["artifacts"], name), live / name)
        assert svc.post("/discovery/reload").status_code == 200
        assert svc.post("/storage/flush").status_code == 503  # started without --db


@pytest.mark.parametrize("args,needle", [
    (["--db", "{tmp}"], "directory"),
    (["--db", "{tmp}/not.db"], "not a database"),
    (["--port", "70000"], "--port"),
    (["--discovery-dir", "{tmp}/file"], "not a folder"),
    (["--flush-size", "0"], "--flush-size"),
])
def test_cli_errors_exit_2(tmp_path, args, needle) -> None:
    (tmp_path / "not.db").write_bytes(b"plain text, not SQLite" * 50)
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "sglang.srt.attention_sidecar", "--zmq-bind", "none", *argv],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_ingest_stores_each_fingerprint_version(tmp_path) -> None:
    db = tmp_path / "f.db"
    with _service("--db", str(db), "--zmq-bind", "tcp://127.0.0.1:*") as svc:
        frames = [fingerprint_frame(_vec(i), step=i, **({} if i % 3 == 0 else {"fingerprint_version": 1 + i % 2}))
                  for i in range(30)]
        frames.append(fingerprint_frame(_vec(99), fingerprint_version=3))
        push_frames(svc.zmq_endpoint, frames)
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= 31)
        assert (s["received"], s["rejected"]) == (30, 1)
        assert s["rejected_by_reason"] == {"unsupported_fingerprint_version": 1}
        want = {i: 1 if i % 3 == 0 else 1 + i % 2 for i in range(30)}
        assert s["received_by_fingerprint_version"] == {
            str(v): n for v, n in sorted({v: list(want.values()).count(v) for v in set(want.values())}.items())}
        svc.post("/storage/flush")
    rows = sqlite3.connect(db).execute("SELECT step, fingerprint_version FROM fingerprints").fetchall()
    assert dict(rows) == want


def test_classify_follows_the_runs_fingerprint_version(discovery_run) -> None:
    """The shared run clustered version 1 fingerprints: /classify of version 1 (or unsaid) answers,
    version 2 is a 400 naming the field; /centroids, /discovery/status and /pca/interpretation
    say the version."""
    X, _ = synthetic.make_clusters(20, seed=12)
    man = json.load(open(os.path.join(discovery_run["artifacts"], "manifest.json")))
    assert man["fingerprint_version"] == 1
    with _service("--discovery-dir", discovery_run["artifacts"], "--zmq-bind", "none") as svc:
        unsaid = svc.post("/classify", json={"vectors": X.tolist()}).json()["results"]
        said = svc.post("/classify", json={"vectors": X.tolist(), "fingerprint_version": 1}).json()["results"]
        assert said == unsaid and all(r["fingerprint_version"] == 1 for r in said)
        err = _assert_error(svc.post("/classify", json={"vector": X[0].tolist(), "fingerprint_version": 2}), 400,
                            "fingerprint_version")
        assert err["code"] == "fingerprint_version_mismatch" and "version 1" in err["message"]
        for bad in (3, "2", 2.5, True):
            err = _assert_error(svc.post("/classify", json={"vector": X[0].tolist(), "fingerprint_version": bad}),
                                400, "fingerprint_version")
            assert err["code"] == "invalid_fingerprint_version"
        assert svc.get("/centroids").json()["fingerprint_version"] == 1
        assert svc.get("/discovery/status").json()["current"]["fingerprint_version"] == 1
        assert svc.get("/stats").json()["discovery_fingerprint_version"] == 1
        run_doc = svc.get("/pca/interpretation").json()
        assert run_doc["fingerprint_version"] == 1 and run_doc["source"]["run_id"] == man["run_id"]
        assert svc.get("/pca/interpretation?fingerprint_version=1").json() == run_doc
        # another version: the shipped default of that version (or 404 while there is none)
        from sglang.srt.attention_sidecar import pca_interpretation as pi

        r = svc.get("/pca/interpretation?fingerprint_version=2")
        if os.path.exists(pi.default_path(2)):
            assert r.status_code == 200 and r.json() == pi.load_default(2)
        else:
            assert _assert_error(r, 404, "fingerprint_version")["code"] == "no_interpretation"
        err = _assert_error(svc.get("/pca/interpretation?fingerprint_version=7"), 400, "fingerprint_version")
        assert err["code"] == "invalid_fingerprint_version"


def test_pca_interpretation_without_a_run_follows_the_version_asked() -> None:
    from sglang.srt.attention_sidecar import pca_interpretation as pi

    with _service("--zmq-bind", "none") as svc:
        assert svc.get("/pca/interpretation").json() == pi.load_default(1)
        assert svc.get("/pca/interpretation?fingerprint_version=1").json()["fingerprint_version"] == 1
        assert svc.get("/centroids").json() == {"run_id": None, "fingerprint_version": None, "clusters": []}
