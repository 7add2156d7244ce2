"""run_discovery.py clusters the fingerprints of one version: --fingerprint-version picks them,
the manifest, zones and PCA interpretation follow that version, and a database without any of
it is a clear error that names the versions it has."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sgl_kernel import zones
from sglang.srt.attention_sidecar import store
from sglang.srt.attention_sidecar.artifacts import FingerprintVersionMismatch, load_artifact_set
from sglang.srt.attention_sidecar.wire import FingerprintMessage
from sglang.test import synthetic
from sglang.test.sidecar_service import subprocess_env

SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples",
                                      "attention_explorer", "discovery", "run_discovery.py"))
pytestmark = pytest.mark.timeout(600)


def _between_diffuse_thresholds(n: int, seed: int) -> np.ndarray:
    """Near-uniform fingerprints whose entropy lies between the two versions' diffuse thresholds:
    their zone depends on the version they are read as."""
    t1, t2 = zones.thresholds(1)[0]["diffuse"], zones.thresholds(2)[0]["diffuse"]
    if t1 == t2:
        pytest.skip("the version 1 and 2 diffuse thresholds are equal")
    rng = np.random.default_rng(seed)
    hists = rng.dirichlet(np.full(zones.N_HIST_BINS, 400.0 / zones.N_HIST_BINS), size=n)
    ents = (t1 + t2) / 2 + rng.normal(0, 0.003, size=n)
    return np.array([zones.fingerprint_from_hist(h, e) for h, e in zip(hists, ents)])


def _insert(db: str, X: np.ndarray, version: int, prefix: str) -> None:
    conn = store.connect(db)
    store.insert_messages(conn, [FingerprintMessage(f"{prefix}-{i}", None, "step", i, None, None, f"model-v{version}",
                                                    0.0, 0.0, [float(v) for v in x], version)
                                 for i, x in enumerate(X)])
    conn.close()


def _run(db: str, out: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, "--db", db, "--output-dir", out, "--no-progress", "--no-plot",
                           *args], capture_output=True, text=True, env=subprocess_env(), timeout=600)


def test_a_run_clusters_one_version_and_reads_its_zones_with_it(tmp_path) -> None:
    db, art = str(tmp_path / "f.db"), str(tmp_path / "art")
    X1, y1 = synthetic.make_clusters(300, seed=41)
    synthetic.write_db(db, X1, y1)  # version 1: rows that do not say
    X2, _ = synthetic.make_clusters(300, n_clusters=3, seed=42)
    X2 = np.vstack([X2, _between_diffuse_thresholds(100, 43)])
    _insert(db, X2, 2, "v2")
    r = _run(db, art, "--min-samples", "50")  # default: version 2
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["fingerprint_version"] == 2 and summary["n_points"] == len(X2)

    man = json.load(open(os.path.join(art, "manifest.json")))
    assert man["fingerprint_version"] == 2 and man["parameters"]["fingerprint_version"] == 2
    assert man["models"] == ["model-v2"]
    pts = pq.read_table(os.path.join(art, "points.parquet")).to_pydict()
    assert all(r.startswith("v2-") for r in pts["request_id"]) and len(pts["request_id"]) == len(X2)
    # every zone is read with version 2's thresholds
    cents = json.load(open(os.path.join(art, "centroids.json")))["clusters"]
    assert len(cents) == 4
    for c in cents:
        assert c["zone"] == zones.classify(c["centroid"], 2).zone and c["traits"] == zones.traits(c["centroid"], 2)
        hints = zones.sampling_hints(c["centroid"], 2)
        assert (c["sampling_hints"]["temperature"], c["sampling_hints"]["top_p"]) == (hints["temperature"],
                                                                                      hints["top_p"])
    between = min(cents, key=lambda c: abs(c["centroid"][3] - X2[-1][3]))
    assert zones.classify(between["centroid"], 1).zone != between["zone"]  # version 1 would read it otherwise
    index = {int(i): k for k, i in enumerate(pts["id"])}
    rows = sqlite3.connect(db).execute("SELECT id, vector FROM fingerprints WHERE fingerprint_version = 2").fetchall()
    for fid, blob in rows[::25]:
        assert pts["point_zone"][index[fid]] == zones.classify(store.decode_vectors([blob])[0], 2).zone
    interp = json.load(open(os.path.join(art, "pca_interpretation.json")))
    assert interp["fingerprint_version"] == 2 and interp["source"]["n_fingerprints"] == len(X2)
    params = json.loads(sqlite3.connect(db).execute("SELECT parameters FROM discovery_runs").fetchone()[0])
    assert params["fingerprint_version"] == 2

    # the artifacts classify fingerprints of their version only
    arts = load_artifact_set(art)
    assert arts.fingerprint_version == 2 and arts.status()["fingerprint_version"] == 2
    res = arts.classify(X2[-3:], fingerprint_version=2)
    assert [r["fingerprint_version"] for r in res] == [2, 2, 2] and res == arts.classify(X2[-3:])
    with pytest.raises(FingerprintVersionMismatch, match="version 2"):
        arts.classify(X2[-3:], fingerprint_version=1)


def test_no_fingerprints_of_the_version_is_a_clear_error(tmp_path) -> None:
    db = str(tmp_path / "v1.db")
    synthetic.write_db(db, *synthetic.make_clusters(150, seed=44))  # version 1 only
    r = _run(db, str(tmp_path / "out"))  # asks for version 2
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert "no fingerprints of version 2" in r.stderr and "150 of version 1" in r.stderr
    assert "--fingerprint-version 1" in r.stderr
    assert not os.path.exists(tmp_path / "out" / "manifest.json")
    status, err = sqlite3.connect(db).execute("SELECT status, error FROM discovery_runs").fetchone()
    assert status == "failed" and "no fingerprints of version 2" in err
    r = _run(db, str(tmp_path / "out"), "--fingerprint-version", "3")
    assert r.returncode == 2 and "--fingerprint-version" in r.stderr


def test_old_manifests_are_version_1_and_unknown_versions_are_refused(tmp_path, discovery_run) -> None:
    """A set written before runs recorded their version reads as version 1; a manifest naming a
    version this code does not know is refused as a whole."""
    import shutil

    from sglang.srt.attention_sidecar.artifacts import MANIFEST, ArtifactError

    art = tmp_path / "art"
    shutil.copytree(discovery_run["artifacts"], art)
    man = json.load(open(art / MANIFEST))
    del man["fingerprint_version"]
    json.dump(man, open(art / MANIFEST, "w"))
    assert load_artifact_set(str(art)).fingerprint_version == 1
    man["fingerprint_version"] = 9
    json.dump(man, open(art / MANIFEST, "w"))
    with pytest.raises(ArtifactError, match="fingerprint_version 9"):
        load_artifact_set(str(art))
