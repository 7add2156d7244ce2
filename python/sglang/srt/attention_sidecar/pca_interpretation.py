"""PCA interpretation of fingerprints: loadings, names and explanations for PC1..PC4.

Fingerprints of different versions (``sgl_kernel.zones.FINGERPRINT_VERSIONS``) have different
distributions, so each version has its own shipped defaults (``default_path(version)``):
``data/pca_interpretation.json`` for version 1, ``data/pca_interpretation_v2.json`` for version
2; every discovery run recomputes the same structure for its own data (of one version), and
every document says its ``fingerprint_version``. Recompute the defaults of a version from the
fingerprints of that version in any fingerprint database::

    python -m sglang.srt.attention_sidecar.pca_interpretation --db attention_data.db \\
        --fingerprint-version 2 --source "SmolLM2-135M-Instruct fingerprints captured by the engine"

Names and phrases are derived from the loadings, not hard-coded per component: features are
grouped into four concepts (local = local mass + bins 0-2, semantic bridge = mid mass + bins
3-7, long range = long mass + bins 8-15, diffuse = normalized entropy); each component is
signed so that its largest loading is positive, and is named "<concept of the most positive
feature> vs <concept of the most negative feature>" (with distance ranges when both are bins
of the same band). A fingerprint's explanation reads its z-score on
each component: |z| >= 1.5 "Strong", >= 0.5 "Moderate", otherwise "Weak", followed by the
phrase of the side it falls on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from sgl_kernel.zones import (DEFAULT_FINGERPRINT_VERSION, FINGERPRINT_DIM, FINGERPRINT_VERSIONS, LOCAL_BINS,
                              LONG_BINS, MID_BINS)

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
DEFAULT_PATH = os.path.join(DATA_DIR, "pca_interpretation.json")  # version 1's
DEFAULT_FILES = {1: "pca_interpretation.json", 2: "pca_interpretation_v2.json"}
N_COMPONENTS = 4
STRONG, MODERATE = 1.5, 0.5

_BIN_LABELS = ["d0-1"] + [f"d{2 ** b}-{2 ** (b + 1) - 1}" for b in range(1, 15)] + ["d32768+"]
FEATURE_NAMES: list[str] = ["local_mass", "mid_mass", "long_mass", "entropy"] + [f"hist_{s}" for s in _BIN_LABELS]


def _group(bins: slice, mass_index: int) -> list[int]:
    return [mass_index] + [4 + i for i in range(bins.start, bins.stop)]


CONCEPTS: dict[str, dict[str, Any]] = {
    "local": {"features": _group(LOCAL_BINS, 0), "name": "Local",
              "phrase": "local syntax processing (immediate neighbors)"},
    "semantic": {"features": _group(MID_BINS, 1), "name": "Semantic Bridge",
                 "phrase": "semantic context retrieval (paragraph-level reasoning)"},
    "long": {"features": _group(LONG_BINS, 2), "name": "Long-Range",
             "phrase": "long-range information retrieval (document-level)"},
    "diffuse": {"features": [3], "name": "Diffuse", "phrase": "diffuse, exploratory attention (high entropy)",
                "negative_name": "Focused", "negative_phrase": "focused, confident attention (low entropy)"},
}


def fit_pca(X: np.ndarray, n_components: int = N_COMPONENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mean, components [k, 20], explained variance and ratio, by SVD of the centred data."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    var = s ** 2 / max(len(X) - 1, 1)
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    k = min(n_components, vt.shape[0])
    return mean, vt[:k], var[:k], ratio[:k]


def _concept_of(j: int) -> str:
    for c, spec in CONCEPTS.items():
        if j in spec["features"]:
            return c
    raise ValueError(j)


def _side(j: int, with_range: bool) -> tuple[str, str]:
    """(label, phrase) of the side of a component where feature ``j`` is high."""
    spec = CONCEPTS[_concept_of(j)]
    if with_range and j >= 4:  # a histogram bin: say which distances
        rng = _BIN_LABELS[j - 4][1:]
        return f"{spec['name']} d{rng}", f"{spec['phrase'][:-1]}, distance {rng})"
    return spec["name"], spec["phrase"]


class DefaultMissing(FileNotFoundError):
    """No shipped interpretation for the fingerprint version asked for."""


def check_version(version: Any) -> int:
    """``version`` as a fingerprint version, or ValueError naming the valid ones."""
    if type(version) is not int or version not in FINGERPRINT_VERSIONS:
        raise ValueError(f"fingerprint version must be one of {list(FINGERPRINT_VERSIONS)}, got {version!r}")
    return version


def default_path(version: int = 1) -> str:
    """The shipped default interpretation of fingerprints of ``version``."""
    return os.path.join(DATA_DIR, DEFAULT_FILES[check_version(version)])


def interpret(mean: np.ndarray, components: np.ndarray, explained_variance: np.ndarray,
              explained_variance_ratio: np.ndarray, source: dict[str, Any],
              fingerprint_version: int = 1) -> dict[str, Any]:
    """Build the interpretation document from a fitted PCA (first four components) of
    fingerprints of ``fingerprint_version`` (recorded in the document).

    Each component is signed so that its largest loading is positive; its positive side is
    named after the most positive feature and its negative side after the most negative one
    (with distance ranges when both are bins of the same band, e.g. 256-511 vs 512-1023).
    """
    out = []
    for i in range(min(N_COMPONENTS, len(components))):
        load = np.asarray(components[i], dtype=np.float64).copy()
        if load[int(np.argmax(np.abs(load)))] < 0:
            load = -load
        pj, nj = int(np.argmax(load)), int(np.argmin(load))
        if load[nj] < -0.25 * load[pj]:
            same = _concept_of(pj) == _concept_of(nj)
            (pos_name, pos_phrase), (neg_name, neg_phrase) = _side(pj, same), _side(nj, same)
        else:  # one-sided component: the negative side is simply "less of it"
            pos_name, pos_phrase = _side(pj, False)
            spec = CONCEPTS[_concept_of(pj)]
            neg_name = spec.get("negative_name", f"Less {pos_name}")
            neg_phrase = spec.get("negative_phrase", f"little {pos_phrase}")
        scores = {c: round(float(load[spec["features"]].sum()), 6) for c, spec in CONCEPTS.items()}
        order = np.argsort(-np.abs(load))[:5]
        out.append({
            "pc": i + 1,
            "name": f"{pos_name} vs {neg_name}",
            "explained_variance_ratio": round(float(explained_variance_ratio[i]), 6),
            "explained_variance": float(explained_variance[i]),
            "loadings": [round(float(v), 6) for v in load],
            "concept_scores": scores,
            "top_features": [{"feature": FEATURE_NAMES[j], "loading": round(float(load[j]), 6)} for j in order],
            "positive": pos_phrase,
            "negative": neg_phrase,
        })
    return {
        "version": 1,
        "fingerprint_version": check_version(fingerprint_version),
        "feature_names": FEATURE_NAMES,
        "mean": [round(float(v), 8) for v in mean],
        "components": out,
        "strength_thresholds": {"strong": STRONG, "moderate": MODERATE},
        "source": source,
    }


def compute(X: np.ndarray, source: dict[str, Any], fingerprint_version: int = 1) -> dict[str, Any]:
    """The interpretation of fingerprints ``X`` (all of ``fingerprint_version``)."""
    mean, comps, var, ratio = fit_pca(X)
    return interpret(mean, comps, var, ratio, {**source, "n_fingerprints": int(len(X))}, fingerprint_version)


def explain(vector: Sequence[float], interp: dict[str, Any]) -> list[dict[str, Any]]:
    """Natural-language reading of one fingerprint on each interpreted component."""
    x = np.asarray(vector, dtype=np.float64) - np.asarray(interp["mean"], dtype=np.float64)
    res = []
    for c in interp["components"]:
        sd = float(np.sqrt(c["explained_variance"])) or 1.0
        z = float(x @ np.asarray(c["loadings"])) / sd
        strength = "Strong" if abs(z) >= STRONG else "Moderate" if abs(z) >= MODERATE else "Weak"
        phrase = c["positive"] if z >= 0 else c["negative"]
        res.append({"pc": c["pc"], "name": c["name"], "z": round(z, 4), "text": f"{strength} {phrase}"})
    return res


def document_version(doc: dict[str, Any]) -> int:
    """The fingerprint version an interpretation document describes (1 when it predates versions)."""
    return int(doc.get("fingerprint_version", 1))


def load_default(version: int = 1) -> dict[str, Any]:
    """The shipped interpretation of fingerprints of ``version``; DefaultMissing when there is none."""
    path = default_path(version)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise DefaultMissing(
            f"no shipped PCA interpretation for fingerprint version {version}: {path} does not exist; compute it "
            f"with python -m sglang.srt.attention_sidecar.pca_interpretation --db DB --fingerprint-version "
            f"{version}") from None
    if document_version(doc) != version:
        raise ValueError(f"{path} describes fingerprint version {document_version(doc)}, not {version}")
    doc.setdefault("fingerprint_version", version)  # version 1's file predates the field
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sglang.srt.attention_sidecar.pca_interpretation",
        description="Recompute the PCA interpretation (PC1..PC4) from a fingerprint SQLite database.")
    ap.add_argument("--db", required=True, help="fingerprint database written by the attention sidecar")
    ap.add_argument("--output", default=None,
                    help="where to write the JSON (default: the shipped file of --fingerprint-version)")
    ap.add_argument("--fingerprint-version", type=int, choices=list(FINGERPRINT_VERSIONS),
                    default=DEFAULT_FINGERPRINT_VERSION,
                    help="use the fingerprints of this version only (default %(default)s)")
    ap.add_argument("--kind", choices=["step", "request", "all"], default="all")
    ap.add_argument("--limit", type=int, default=None, help="use the most recent N fingerprints")
    ap.add_argument("--source", default="", help="free text stored in the file's metadata: what the data is")
    args = ap.parse_args(argv)
    from sglang.srt.attention_sidecar import store

    if args.limit is not None and args.limit < 2:
        print("error: --limit must be at least 2", file=sys.stderr)
        return 2
    version = args.fingerprint_version
    output = args.output or default_path(version)
    kind = None if args.kind == "all" else args.kind
    try:
        conn = store.connect(args.db, create=False)
        table = store.load_fingerprints(conn, kind=kind, limit=args.limit, fingerprint_version=version)
        have = store.fingerprint_versions(conn, kind=kind)
    except store.StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(table.vectors) < FINGERPRINT_DIM:
        print(f"error: {len(table.vectors)} fingerprints of version {version} in {args.db}; need at least "
              f"{FINGERPRINT_DIM} (--fingerprint-version; the database holds {_describe_versions(have)})",
              file=sys.stderr)
        return 2
    models = sorted({m for (m,) in conn.execute("SELECT DISTINCT model FROM fingerprints WHERE fingerprint_version = ?",
                                                (version,)) if m})
    doc = compute(table.vectors, {"description": args.source, "db": os.path.abspath(args.db),
                                  "models": models, "computed_at": time.time(),
                                  "command": "python -m sglang.srt.attention_sidecar.pca_interpretation"},
                  fingerprint_version=version)
    with open(output, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps({"output": output, "fingerprint_version": version, "n_fingerprints": len(table.vectors),
                      "components": [(c["name"], c["explained_variance_ratio"]) for c in doc["components"]]}))
    return 0


def _describe_versions(counts: dict[int, int]) -> str:
    """{1: 5213, 2: 80} -> "5213 of version 1, 80 of version 2"."""
    if not counts:
        return "no fingerprints"
    return ", ".join(f"{n} of version {v}" for v, n in sorted(counts.items()))


if __name__ == "__main__":
    sys.exit(main())
