"""PCA interpretation: shipped defaults, recomputation, explanations and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sglang.srt.attention_sidecar import pca_interpretation as pi
from sglang.test import synthetic

CONCEPT_NAMES = {"Local", "Semantic Bridge", "Long-Range", "Diffuse", "Focused"}


def _check_doc(doc: dict) -> None:
    assert doc["version"] == 1 and len(doc["feature_names"]) == 20 and len(doc["mean"]) == 20
    comps = doc["components"]
    assert [c["pc"] for c in comps] == [1, 2, 3, 4]
    ratios = [c["explained_variance_ratio"] for c in comps]
    assert ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) <= 1.0 + 1e-9
    for c in comps:
        load = np.array(c["loadings"])
        assert load.shape == (20,) and abs(np.linalg.norm(load) - 1) < 1e-4
        pos, neg = c["name"].split(" vs ")
        assert any(pos.startswith(n) for n in CONCEPT_NAMES)
        assert any(neg.startswith(n) for n in CONCEPT_NAMES) or neg.startswith("Less ")
        # sign convention: the largest loading is positive
        assert max(c["loadings"], key=abs) > 0
        assert c["positive"] and c["negative"]


def test_shipped_defaults_are_well_formed_and_say_where_they_come_from() -> None:
    doc = pi.load_default()
    _check_doc(doc)
    assert doc["source"]["description"] and doc["source"]["n_fingerprints"] > 1000


def test_local_vs_long_data_gives_a_local_vs_long_first_component() -> None:
    X, _ = synthetic.make_clusters(600, n_clusters=3, seed=1)  # local, semantic, long prototypes
    doc = pi.compute(X, {"description": "test"})
    _check_doc(doc)
    lines = pi.explain(X[0], doc)
    assert [e["pc"] for e in lines] == [1, 2, 3, 4]
    for e in lines:
        strength = e["text"].split(" ", 1)[0]
        expect = "Strong" if abs(e["z"]) >= 1.5 else "Moderate" if abs(e["z"]) >= 0.5 else "Weak"
        assert strength == expect
    # a purely local fingerprint reads as local syntax on whichever component carries "Local"
    local = X[np.argmax(X[:, 0])]
    texts = [e["text"] for e in pi.explain(local, doc)]
    assert any("local syntax processing" in t and not t.startswith("Weak") for t in texts)


def test_cli_recomputes_from_a_database(tmp_path) -> None:
    X, y = synthetic.make_clusters(300, seed=2)
    db = tmp_path / "f.db"
    synthetic.write_db(str(db), X, y)
    out = tmp_path / "interp.json"
    r = subprocess.run([sys.executable, "-m", "sglang.srt.attention_sidecar.pca_interpretation", "--db", str(db),
                        "--output", str(out), "--source", "unit test", "--fingerprint-version", "1"],  # write_db: v1
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    _check_doc(doc)
    expect = pi.compute(X, {})
    for a, b in zip(doc["components"], expect["components"]):
        assert np.allclose(a["loadings"], b["loadings"], atol=1e-5)
    assert doc["source"]["description"] == "unit test" and doc["source"]["models"] == ["synthetic"]
    bad = subprocess.run([sys.executable, "-m", "sglang.srt.attention_sidecar.pca_interpretation", "--db",
                          str(tmp_path / "missing.db"), "--output", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_defaults_are_per_fingerprint_version(tmp_path, monkeypatch) -> None:
    assert pi.default_path(1) == pi.DEFAULT_PATH and pi.default_path(2).endswith("pca_interpretation_v2.json")
    assert pi.load_default(1)["fingerprint_version"] == 1 and pi.load_default() == pi.load_default(1)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        pi.default_path(3)
    # in a data folder without the version-2 file: a clear error naming it; with it: that document
    monkeypatch.setattr(pi, "DATA_DIR", str(tmp_path))
    with pytest.raises(pi.DefaultMissing, match="pca_interpretation_v2.json.*--fingerprint-version 2"):
        pi.load_default(2)
    X, _ = synthetic.make_clusters(200, n_clusters=3, seed=4)
    (tmp_path / "pca_interpretation_v2.json").write_text(json.dumps(pi.compute(X, {}, fingerprint_version=2)))
    assert pi.load_default(2)["fingerprint_version"] == 2
    (tmp_path / "pca_interpretation_v2.json").write_text(json.dumps(pi.compute(X, {}, fingerprint_version=1)))
    with pytest.raises(ValueError, match="describes fingerprint version 1"):
        pi.load_default(2)


def test_documents_say_their_fingerprint_version() -> None:
    X, _ = synthetic.make_clusters(200, n_clusters=3, seed=5)
    assert pi.compute(X, {})["fingerprint_version"] == 1
    assert pi.compute(X, {}, fingerprint_version=2)["fingerprint_version"] == 2
    with pytest.raises(ValueError):
        pi.compute(X, {}, fingerprint_version=3)


def test_cli_uses_the_rows_of_one_version(tmp_path) -> None:
    from sglang.srt.attention_sidecar import store
    from sglang.srt.attention_sidecar.wire import FingerprintMessage

    X1, y1 = synthetic.make_clusters(300, seed=6)
    X2, _ = synthetic.make_clusters(200, n_clusters=2, seed=7)
    db = tmp_path / "f.db"
    synthetic.write_db(str(db), X1, y1)  # version 1 (no version said)
    cli = [sys.executable, "-m", "sglang.srt.attention_sidecar.pca_interpretation", "--db", str(db)]
    out = tmp_path / "v2.json"
    r = subprocess.run([*cli, "--output", str(out)], capture_output=True, text=True, timeout=120)  # default: 2
    assert r.returncode == 2 and "0 fingerprints of version 2" in r.stderr and "300 of version 1" in r.stderr, r.stderr
    conn = store.connect(str(db))
    store.insert_messages(conn, [FingerprintMessage(f"v2-{i}", None, "step", i, None, None, "m2", 0.0, 0.0,
                                                    [float(v) for v in x], 2) for i, x in enumerate(X2)])
    r = subprocess.run([*cli, "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["fingerprint_version"] == 2 and doc["source"]["n_fingerprints"] == 200
    assert doc["source"]["models"] == ["m2"]
    expect = pi.compute(X2, {}, fingerprint_version=2)
    for a, b in zip(doc["components"], expect["components"]):
        assert np.allclose(a["loadings"], b["loadings"], atol=1e-5)
