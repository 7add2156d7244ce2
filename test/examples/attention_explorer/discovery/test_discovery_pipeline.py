"""run_discovery.py end to end on a real SQLite file, plus its input errors."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from sgl_kernel import zones
from sglang.srt.attention_sidecar.artifacts import load_artifact_set
from sglang.srt.attention_sidecar.store import decode_vectors
from sglang.test import synthetic

SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples",
                                      "attention_explorer", "discovery", "run_discovery.py"))
pytestmark = pytest.mark.timeout(300)


def test_artifacts_points_and_clusters(discovery_run) -> None:
    art, n = discovery_run["artifacts"], discovery_run["n"]
    assert {"manifest.json", "points.parquet", "centroids.json", "pca.joblib", "umap.joblib", "clusterer.joblib",
            "pca.npz", "index.npz", "pca_interpretation.json", "map.png"} <= set(os.listdir(art))
    assert not [f for f in os.listdir(art) if f.startswith(".staging")]
    pts = pq.read_table(os.path.join(art, "points.parquet")).to_pydict()
    assert len(pts["id"]) == n and {"x", "y", "cluster_id", "zone", "point_zone", "request_id"} <= set(pts)
    # request ids carry the true cluster: "c<k>-<i>"
    truth = [int(r.split("-")[0][1:]) for r in pts["request_id"]]
    assert adjusted_rand_score(truth, pts["cluster_id"]) > 0.9
    cents = json.load(open(os.path.join(art, "centroids.json")))["clusters"]
    assert len(cents) == 5 and sum(c["size"] for c in cents) == sum(1 for c in pts["cluster_id"] if c >= 0)
    for c in cents:
        assert c["zone"] == zones.classify(c["centroid"]).zone and c["traits"] == zones.traits(c["centroid"])
    for cid, zone in zip(pts["cluster_id"], pts["zone"]):
        if cid >= 0:
            assert zone == cents[[c["cluster_id"] for c in cents].index(cid)]["zone"]
    man = json.load(open(os.path.join(art, "manifest.json")))
    assert man["n_points"] == n and man["metrics"]["n_clusters"] == 5 and "umap-learn" in man["versions"]
    # UMAP was fitted on 2/3 of the points; the rest were placed by nearest neighbours
    assert man["parameters"]["umap_fit_points"] == n * 2 // 3 < n
    assert man["metrics"]["silhouette_2d"] > 0.5 and set(man["timings_s"]) >= {"pca", "umap", "cluster"}
    with open(os.path.join(art, "map.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    interp = json.load(open(os.path.join(art, "pca_interpretation.json")))
    assert len(interp["components"]) == 4 and interp["source"]["run_id"] == man["run_id"]


def test_run_is_recorded_in_the_database(discovery_run) -> None:
    conn = sqlite3.connect(discovery_run["db"])
    run = conn.execute("SELECT run_id, status, n_fingerprints, n_clusters, metrics FROM discovery_runs "
                       "WHERE status = 'completed'").fetchall()
    assert len(run) == 1 and run[0][2:4] == (discovery_run["n"], 5) and json.loads(run[0][4])["noise_fraction"] < 0.1
    rows = conn.execute("SELECT cluster_id, size, centroid, zone FROM clusters WHERE run_id = ?", (run[0][0],)).fetchall()
    assert len(rows) == 5
    for _, _, blob, zone in rows:
        assert zones.classify(decode_vectors([blob])[0]).zone == zone


def test_saved_models_project_new_points(discovery_run) -> None:
    """The fitted UMAP + clusterer (method="umap") and the fast index agree on new points."""
    arts = load_artifact_set(discovery_run["artifacts"])
    X, y = synthetic.make_clusters(40, seed=31)
    fast = arts.classify(X, method="knn")
    exact = arts.classify(X, method="umap")
    assert adjusted_rand_score(y, [r["cluster_id"] for r in exact]) > 0.9
    agree = np.mean([a["cluster_id"] == b["cluster_id"] for a, b in zip(fast, exact)])
    assert agree >= 0.95


def test_too_few_fingerprints_is_a_clean_error(tmp_path) -> None:
    X, y = synthetic.make_clusters(50, seed=1)
    db = tmp_path / "small.db"
    synthetic.write_db(str(db), X, y)
    r = subprocess.run([sys.executable, SCRIPT, "--db", str(db), "--output-dir", str(tmp_path / "out"),
                        "--min-samples", "100", "--fingerprint-version", "1"],  # write_db stores version 1
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "only 50 fingerprints" in r.stderr and "--min-samples" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "manifest.json").exists()
    row = sqlite3.connect(db).execute("SELECT status, error FROM discovery_runs").fetchall()
    assert row and row[0][0] == "failed" and "only 50" in row[0][1]


@pytest.mark.parametrize("kind", ["missing", "not_sqlite", "bad_option"])
def test_bad_inputs_exit_2(tmp_path, kind) -> None:
    db = tmp_path / "x.db"
    extra = []
    if kind == "not_sqlite":
        db.write_bytes(b"definitely not sqlite" * 40)
    elif kind == "bad_option":
        synthetic.write_db(str(db), *synthetic.make_clusters(10))
        extra = ["--pca-components", "50"]
    r = subprocess.run([sys.executable, SCRIPT, "--db", str(db), "--output-dir", str(tmp_path / "o"), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
