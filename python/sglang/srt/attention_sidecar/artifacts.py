"""Discovery artifact sets: the on-disk format, an atomic writer, and a validating loader.

A discovery run writes one flat folder::

    manifest.json             written last; format, run id, fingerprint_version (the one version
                              of the run's fingerprints; 1 when absent: sets written before
                              versions existed), parameters, metrics, versions and the sha256 +
                              size of every other file (the loader checks them all)
    points.parquet            one row per fingerprint: id, request_id, session_id, step, x, y,
                              cluster_id, cluster_probability, zone, point_zone
    centroids.json            one entry per cluster: 20-D centroid, PCA and 2-D centroids, zone,
                              confidence, traits, sampling hints, size, radius
    pca.npz                   mean, components, explained variance (fast numpy projection)
    index.npz                 training points in PCA space with their 2-D coordinates, labels and
                              membership probabilities: /classify's nearest-neighbour index
    pca.joblib, umap.joblib, clusterer.joblib
                              the fitted scikit-learn PCA, UMAP and HDBSCAN objects, for exact
                              projection of new points (``ArtifactSet.classify(..., method="umap")``)
    pca_interpretation.json   PC1..PC4 loadings, names and explanations for this data
    map.png                   the 2-D map coloured by zone

Readers never see a half-written set as valid: the writer moves finished files in and replaces
the manifest last, and the loader rejects any file whose checksum disagrees with the manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sgl_kernel.zones import FINGERPRINT_DIM, FINGERPRINT_VERSIONS
from sglang.srt.attention_sidecar.describe import describe

log = logging.getLogger("attention_sidecar.artifacts")

FORMAT = "sglang-discovery/1"
MANIFEST = "manifest.json"
REQUIRED_FILES = ("points.parquet", "centroids.json", "pca.npz", "index.npz", "pca_interpretation.json")
MODEL_FILES = ("pca.joblib", "umap.joblib", "clusterer.joblib")
NEIGHBORS = 10
UNKNOWN_ZONE = "unknown"
POINT_COLUMNS = ("request_id", "session_id", "step", "point_zone")  # optional columns of points.parquet
OOD_FACTOR = 3.0  # a point farther than 3x the training 99th-percentile 1-NN distance is "unknown"


class ArtifactError(Exception):
    """The artifact folder is missing, partial, corrupted or of an unknown format."""


class FingerprintVersionMismatch(ValueError):
    """Fingerprints of one version classified against a run of another: distances between
    fingerprints of different definitions mean nothing, so this is refused."""

    def __init__(self, asked: int, run_version: int, run_id: Any):
        super().__init__(f"fingerprint_version {asked} does not match the loaded discovery run {run_id}, which "
                         f"clustered version {run_version} fingerprints; send fingerprints of version "
                         f"{run_version} or load a run of version {asked} (run_discovery.py --fingerprint-version "
                         f"{asked})")
        self.asked, self.run_version = asked, run_version


def manifest_version(manifest: dict[str, Any]) -> int:
    """The fingerprint version of a run's manifest (1: written before runs recorded it)."""
    return int(manifest.get("fingerprint_version", 1))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifact_set(out_dir: str, writers: dict[str, Callable[[str], None]], manifest: dict[str, Any]) -> str:
    """Write each file via ``writers[name](path)`` into a staging folder, then move them into
    ``out_dir`` and write ``manifest.json`` (with checksums) last. Returns the manifest path."""
    os.makedirs(out_dir, exist_ok=True)
    staging = os.path.join(out_dir, f".staging-{os.getpid()}-{int(time.time() * 1e3)}")
    os.makedirs(staging)
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, write in writers.items():
            p = os.path.join(staging, name)
            t0 = time.perf_counter()
            write(p)
            files[name] = {"sha256": sha256_file(p), "bytes": os.path.getsize(p),
                           "write_s": round(time.perf_counter() - t0, 3)}
        man = {**manifest, "format": FORMAT, "files": files}
        mp = os.path.join(staging, MANIFEST)
        with open(mp, "w") as f:
            json.dump(man, f, indent=1, sort_keys=True)
        for name in writers:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        os.replace(mp, os.path.join(out_dir, MANIFEST))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(out_dir, MANIFEST)


def _read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


@dataclass
class ArtifactSet:
    """An in-memory, validated artifact set; immutable once loaded (swap, never mutate)."""

    directory: str
    manifest: dict[str, Any]
    centroids: list[dict[str, Any]]
    pca_mean: np.ndarray  # [20]
    pca_components: np.ndarray  # [k, 20]
    index_pca: np.ndarray  # [n, k]
    index_xy: np.ndarray  # [n, 2]
    index_labels: np.ndarray  # [n] int, -1 = noise
    index_prob: np.ndarray  # [n]
    interpretation: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        from scipy.spatial import cKDTree  # imported here: scipy costs ~0.2 s, only with artifacts

        self._tree = cKDTree(self.index_pca)
        self._cluster_by_id = {int(c["cluster_id"]): c for c in self.centroids}
        self._centroid_matrix = (
            np.asarray([c["centroid"] for c in self.centroids], dtype=np.float64)
            if self.centroids else np.zeros((0, FINGERPRINT_DIM))
        )
        self._n_labels = max(self._cluster_by_id, default=-1) + 2  # label -1 -> slot 0
        self._nn_p99 = float(self.manifest.get("metrics", {}).get("nn_distance_p99") or 0.0)
        self._exact_lock = threading.Lock()
        self._exact_models: tuple[Any, Any] | None = None
        self._points_lock = threading.Lock()
        self._point_columns: dict[str, Any] | None = None

    @property
    def run_id(self) -> Any:
        return self.manifest.get("run_id")

    @property
    def fingerprint_version(self) -> int:
        """The version of the fingerprints this run clustered (and the only one it classifies)."""
        return manifest_version(self.manifest)

    def project_pca(self, X: np.ndarray) -> np.ndarray:
        return (X - self.pca_mean) @ self.pca_components.T

    def check_version(self, fingerprint_version: int | None) -> int:
        """The version to classify with: the run's; FingerprintVersionMismatch for another one
        (None: the caller did not say, so its fingerprints are taken to be the run's version)."""
        run_version = self.fingerprint_version
        if fingerprint_version is not None and fingerprint_version != run_version:
            raise FingerprintVersionMismatch(fingerprint_version, run_version, self.run_id)
        return run_version

    def classify(self, X: np.ndarray, method: str = "knn", fingerprint_version: int | None = None
                 ) -> list[dict[str, Any]]:
        """Cluster, zone, 2-D position and hints of each row of ``X`` (float64[m, 20]), fingerprints
        of the run's version (``fingerprint_version`` of another: FingerprintVersionMismatch)."""
        self.check_version(fingerprint_version)
        X = np.asarray(X, dtype=np.float64).reshape(-1, FINGERPRINT_DIM)
        Z = self.project_pca(X)
        k = min(NEIGHBORS, len(self.index_pca))
        dist, idx = self._tree.query(Z, k=k)
        dist = dist.reshape(len(X), k)
        idx = idx.reshape(len(X), k)
        w = 1.0 / (dist + 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        if method == "umap":
            xy, labels, probs = self._exact(Z)
        else:
            xy = np.einsum("mk,mkd->md", w, self.index_xy[idx])
            labels, probs = self._vote(w, idx)
        out = []
        for i in range(len(X)):
            ood = bool(self._nn_p99 > 0 and dist[i, 0] > OOD_FACTOR * self._nn_p99)
            out.append(self._answer(X[i], int(labels[i]), float(probs[i]), xy[i], ood, method))
        return out

    def _vote(self, w: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance-weighted vote of the neighbours' labels; confidence = vote share x membership."""
        lab = self.index_labels[idx] + 1  # shift so noise (-1) is slot 0
        m = len(w)
        votes = np.zeros((m, self._n_labels))
        np.add.at(votes, (np.repeat(np.arange(m), lab.shape[1]), lab.ravel()), w.ravel())
        win = votes.argmax(axis=1)
        share = votes[np.arange(m), win]
        same = lab == win[:, None]
        member = np.where(same, self.index_prob[idx], 0.0).sum(axis=1) / np.maximum(same.sum(axis=1), 1)
        return win - 1, share * member

    def _exact(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        umap_model, clusterer = self._load_exact_models()
        xy = np.asarray(umap_model.transform(Z), dtype=np.float64)
        try:
            import hdbscan

            if isinstance(clusterer, hdbscan.HDBSCAN):
                labels, probs = hdbscan.approximate_predict(clusterer, xy)
                return xy, np.asarray(labels), np.asarray(probs, dtype=np.float64)
        except ImportError:
            pass
        # clusterers without approximate_predict: vote among the training points' 2-D neighbours
        from scipy.spatial import cKDTree

        d, idx = cKDTree(self.index_xy).query(xy, k=min(NEIGHBORS, len(self.index_xy)))
        w = 1.0 / (d.reshape(len(xy), -1) + 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        labels, probs = self._vote(w, idx.reshape(len(xy), -1))
        return xy, labels, probs

    def _load_exact_models(self) -> tuple[Any, Any]:
        with self._exact_lock:
            if self._exact_models is None:
                configure_numba()
                import joblib

                self._exact_models = (
                    joblib.load(os.path.join(self.directory, "umap.joblib")),
                    joblib.load(os.path.join(self.directory, "clusterer.joblib")),
                )
            return self._exact_models

    def _answer(self, x: np.ndarray, label: int, prob: float, xy: np.ndarray, ood: bool, method: str) -> dict:
        cluster = self._cluster_by_id.get(label) if not ood else None
        own = describe(x, self.fingerprint_version)
        if cluster is not None:
            basis = "cluster_centroid"
            zone, zconf = cluster["zone"], cluster["zone_confidence"]
            traits, hints = cluster["traits"], cluster["sampling_hints"]
            distance: float | None = float(np.linalg.norm(x - np.asarray(cluster["centroid"])))
            confidence = prob
        else:
            label = -1
            basis = "vector"
            zone, zconf, traits, hints = own["zone"], own["zone_confidence"], own["traits"], own["sampling_hints"]
            distance = None
            confidence = own["zone_confidence"]
        return {
            "cluster_id": label,
            "zone": zone,
            "confidence": round(float(confidence), 6),
            "zone_confidence": zconf,
            "traits": traits,
            "sampling_hints": hints,
            "x": round(float(xy[0]), 6),
            "y": round(float(xy[1]), 6),
            "distance": None if distance is None else round(distance, 6),
            "basis": basis,
            "vector_zone": own["zone"],
            "out_of_distribution": ood,
            "method": method,
            "run_id": self.run_id,
            "fingerprint_version": self.fingerprint_version,
        }

    def point_columns(self) -> dict[str, Any]:
        """Per training point, in index order: ``x``, ``y`` float32[n], ``label`` int32[n], ``zone``
        (the cluster's zone; for noise, the point's own zone from points.parquet, else
        "unknown"), and the request_id / session_id / step lists from points.parquet when it
        has them. Built on first use (reading the parquet costs ~0.1 s per 100k rows), then cached."""
        with self._points_lock:
            if self._point_columns is None:
                self._point_columns = self._build_point_columns()
            return self._point_columns

    def _build_point_columns(self) -> dict[str, Any]:
        n = len(self.index_xy)
        labels = self.index_labels.astype(np.int32)
        extra = self._read_points_parquet(n)
        own = extra.pop("point_zone", None)
        zone_of = {cid: str(c.get("zone") or UNKNOWN_ZONE) for cid, c in self._cluster_by_id.items()}
        zones = [zone_of.get(int(l), UNKNOWN_ZONE) if l >= 0 else (own[i] if own and own[i] else UNKNOWN_ZONE)
                 for i, l in enumerate(labels.tolist())]
        # index.npz stores float32: keep it, so the JSON carries the shortest float32 text
        xy = self.index_xy.astype(np.float32)
        return {"x": np.ascontiguousarray(xy[:, 0]), "y": np.ascontiguousarray(xy[:, 1]), "label": labels,
                "zone": zones, **extra}

    def _read_points_parquet(self, n: int) -> dict[str, list[Any]]:
        """The optional per-point columns of points.parquet; {} when unreadable or of another length."""
        try:
            import pyarrow.parquet as pq

            path = os.path.join(self.directory, "points.parquet")
            names = set(pq.read_schema(path).names)
            cols = [c for c in POINT_COLUMNS if c in names]
            if not cols:
                return {}
            table = pq.read_table(path, columns=cols)
        except Exception as e:  # pyarrow missing or the file gone since load: coordinates still serve
            log.warning("points.parquet not used: %s", e)
            return {}
        if table.num_rows != n:
            log.warning("points.parquet has %d rows, index.npz %d: per-point ids not served", table.num_rows, n)
            return {}
        return {c: table.column(c).to_pylist() for c in cols}

    def status(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "directory": self.directory,
            "run_id": m.get("run_id"),
            "fingerprint_version": self.fingerprint_version,
            "created_at": m.get("created_at"),
            "n_points": int(len(self.index_pca)),
            "n_clusters": len(self.centroids),
            "zones": {str(c["cluster_id"]): c["zone"] for c in self.centroids},
            "metrics": m.get("metrics", {}),
            "manifest_sha256": m.get("_sha256"),
            "loaded_at": self.loaded_at,
        }


def configure_numba() -> None:
    """numba settings measured to matter on small shared machines (docs/architecture.md#numba-settings)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sglang-numba"))
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


def manifest_fingerprint(directory: str) -> str | None:
    """sha256 of manifest.json, or None when absent: cheap change detection for auto-reload."""
    p = os.path.join(directory, MANIFEST)
    try:
        return sha256_file(p)
    except OSError:
        return None


def load_artifact_set(directory: str) -> ArtifactSet:
    """Load and fully validate an artifact folder; ArtifactError with the reason otherwise."""
    if not os.path.isdir(directory):
        raise ArtifactError(f"discovery folder {directory!r} does not exist or is not a folder")
    mpath = os.path.join(directory, MANIFEST)
    try:
        raw = open(mpath, "rb").read()
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise ArtifactError(f"no {MANIFEST} in {directory!r}: run discovery first") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{MANIFEST} is unreadable: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{MANIFEST} is not a {FORMAT} manifest")
    manifest["_sha256"] = hashlib.sha256(raw).hexdigest()
    version = manifest.get("fingerprint_version", 1)
    if type(version) is not int or version not in FINGERPRINT_VERSIONS:
        raise ArtifactError(f"{MANIFEST} has fingerprint_version {version!r}; this code reads "
                            f"{list(FINGERPRINT_VERSIONS)}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{MANIFEST} lists no files")
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{MANIFEST} does not list required file {name}")
    for name, meta in files.items():
        if os.path.basename(name) != name:
            raise ArtifactError(f"{MANIFEST} lists a file outside the folder: {name!r}")
        p = os.path.join(directory, name)
        try:
            size = os.path.getsize(p)
            digest = sha256_file(p)
        except OSError as e:
            raise ArtifactError(f"artifact {name} is missing or unreadable: {e}") from None
        if not isinstance(meta, dict) or size != meta.get("bytes") or digest != meta.get("sha256"):
            raise ArtifactError(f"artifact {name} does not match the manifest (partial or corrupted set)")
    try:
        centroids = _read_json(os.path.join(directory, "centroids.json"))["clusters"]
        interp = _read_json(os.path.join(directory, "pca_interpretation.json"))
        with np.load(os.path.join(directory, "pca.npz")) as z:
            mean, comps = np.asarray(z["mean"], np.float64), np.asarray(z["components"], np.float64)
        with np.load(os.path.join(directory, "index.npz")) as z:
            ipca = np.asarray(z["pca"], np.float64)
            ixy = np.asarray(z["xy"], np.float64)
            ilab = np.asarray(z["labels"], np.int64)
            iprob = np.asarray(z["probabilities"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"artifact contents are invalid: {e}") from None
    n = len(ipca)
    if mean.shape != (FINGERPRINT_DIM,) or comps.ndim != 2 or comps.shape[1] != FINGERPRINT_DIM:
        raise ArtifactError("pca.npz has wrong shapes")
    if n == 0 or ipca.shape != (n, comps.shape[0]) or ixy.shape != (n, 2) or ilab.shape != (n,) \
            or iprob.shape != (n,):
        raise ArtifactError("index.npz has inconsistent shapes")
    for c in centroids:
        if len(c.get("centroid", ())) != FINGERPRINT_DIM:
            raise ArtifactError(f"centroid of cluster {c.get('cluster_id')} is not {FINGERPRINT_DIM}-D")
    if not isinstance(interp, dict) or interp.get("fingerprint_version", version) != version:
        raise ArtifactError(f"pca_interpretation.json is not of the run's fingerprint version {version}")
    try:
        return ArtifactSet(directory, manifest, centroids, mean, comps, ipca, ixy, ilab, iprob, interp)
    except Exception as e:  # e.g. a KD-tree on non-finite data
        raise ArtifactError(f"cannot index artifacts: {e}") from None
