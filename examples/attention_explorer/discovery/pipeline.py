"""Discovery: fingerprints in SQLite -> PCA -> UMAP (2-D) -> HDBSCAN -> zones -> artifacts.

A run clusters fingerprints of one version (``--fingerprint-version``, default
``sgl_kernel.zones.DEFAULT_FINGERPRINT_VERSION``): fingerprints of different definitions are not
comparable. The version is recorded in the manifest (``fingerprint_version``), the zones are
read with that version's thresholds, and the PCA interpretation says its version too.

Heavy libraries (scikit-learn, umap-learn, hdbscan, matplotlib) are imported only once the
input has been checked, so a bad ``--db`` or too few fingerprints fail in well under a second.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from sgl_kernel import zones
from sglang.srt.attention_sidecar import pca_interpretation, store
from sglang.srt.attention_sidecar.artifacts import configure_numba, write_artifact_set
from sglang.srt.attention_sidecar.describe import describe

ZONE_COLORS = {
    "syntax_floor": "#1f77b4",
    "semantic_bridge": "#2ca02c",
    "long_range": "#d62728",
    "structure_ripple": "#9467bd",
    "diffuse": "#ff7f0e",
}
NOISE_COLOR = "#c7c7c7"


class DiscoveryError(Exception):
    """Bad input or configuration: the CLI prints it and exits with code 2."""


@dataclass
class DiscoveryConfig:
    db: str
    output_dir: str
    min_samples: int = 100
    pca_components: int = 8
    umap_neighbors: int = 15
    umap_min_dist: float = 0.0
    umap_max_fit: int = 30000  # UMAP is fitted on at most this many points (0 = all); see _embed
    min_cluster_size: int | None = None  # default: max(10, n // 100), at most 1000
    hdbscan_min_samples: int | None = None  # default: min(min_cluster_size, 50)
    kind: str = "all"
    fingerprint_version: int = zones.DEFAULT_FINGERPRINT_VERSION
    limit: int | None = None
    seed: int | None = 42
    plot: bool = True
    clusterer: str = "auto"  # auto | hdbscan | sklearn
    progress: bool = True

    def validate(self) -> None:
        if self.min_samples < 2:
            raise DiscoveryError("--min-samples must be at least 2")
        if not 2 <= self.pca_components <= zones.FINGERPRINT_DIM:
            raise DiscoveryError(f"--pca-components must be in 2..{zones.FINGERPRINT_DIM}")
        if self.umap_neighbors < 2:
            raise DiscoveryError("--umap-neighbors must be at least 2")
        if self.umap_max_fit != 0 and self.umap_max_fit < 100:
            raise DiscoveryError("--umap-max-fit must be 0 (fit on all points) or at least 100")
        if not 0.0 <= self.umap_min_dist <= 1.0:
            raise DiscoveryError("--umap-min-dist must be in [0, 1]")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise DiscoveryError("--min-cluster-size must be at least 2")
        if self.hdbscan_min_samples is not None and self.hdbscan_min_samples < 1:
            raise DiscoveryError("--hdbscan-min-samples must be at least 1")
        if self.kind not in ("all", "step", "request"):
            raise DiscoveryError("--kind must be all, step or request")
        if self.fingerprint_version not in zones.FINGERPRINT_VERSIONS:
            raise DiscoveryError(f"--fingerprint-version must be one of {list(zones.FINGERPRINT_VERSIONS)}")
        if self.limit is not None and self.limit < 2:
            raise DiscoveryError("--limit must be at least 2")
        if self.clusterer not in ("auto", "hdbscan", "sklearn"):
            raise DiscoveryError("--clusterer must be auto, hdbscan or sklearn")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise DiscoveryError(f"--output-dir {self.output_dir!r} exists and is not a folder")


@dataclass
class DiscoveryResult:
    run_id: int
    output_dir: str
    n_points: int
    n_clusters: int
    noise_fraction: float
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scikit-learn", "umap-learn", "hdbscan", "pyarrow", "matplotlib", "sglang-attention-explorer"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run_discovery(cfg: DiscoveryConfig) -> DiscoveryResult:
    cfg.validate()
    try:
        conn = store.connect(cfg.db, create=False)
    except store.StoreError as e:
        raise DiscoveryError(str(e)) from None
    kind = None if cfg.kind == "all" else cfg.kind
    version = cfg.fingerprint_version
    by_version = store.fingerprint_versions(conn, kind=kind)
    available = by_version.get(version, 0)
    n = min(available, cfg.limit) if cfg.limit else available
    params_doc = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
    run_id = store.start_run(conn, os.path.abspath(cfg.output_dir), params_doc)
    if available == 0:
        have = ", ".join(f"{c} of version {v}" for v, c in sorted(by_version.items())) or "none at all"
        others = [v for v in sorted(by_version) if v != version]
        hint = f"; run with --fingerprint-version {others[0]}" if len(others) == 1 else ""
        msg = (f"no fingerprints of version {version} in {cfg.db} (kind={cfg.kind}): it holds {have} "
               f"(--fingerprint-version){hint}")
        store.finish_run(conn, run_id, status="failed", n_fingerprints=0, error=msg)
        raise DiscoveryError(msg)
    if n < cfg.min_samples:
        msg = (f"only {n} fingerprints of version {version} in {cfg.db} (kind={cfg.kind}); discovery needs at least "
               f"{cfg.min_samples} (--min-samples)")
        store.finish_run(conn, run_id, status="failed", n_fingerprints=int(n), error=msg)
        raise DiscoveryError(msg)
    try:
        return _run(cfg, conn, run_id, kind, params_doc)
    except BaseException as e:
        store.finish_run(conn, run_id, status="failed", n_fingerprints=int(n), error=f"{type(e).__name__}: {e}")
        raise


def _run(cfg: DiscoveryConfig, conn: Any, run_id: int, kind: str | None, params_doc: dict) -> DiscoveryResult:
    timings: dict[str, float] = {}
    stages = ["load", "import", "pca", "umap", "cluster", "zones", "metrics", "write"]
    bar = tqdm(total=len(stages), desc="discovery", unit="stage", disable=not cfg.progress)

    def stage(name: str) -> float:
        bar.set_postfix_str(name)
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 3)
        bar.update(1)

    t0 = stage("load")
    with tqdm(desc="load fingerprints", unit="fp", disable=not cfg.progress, leave=False) as lb:
        table = store.load_fingerprints(conn, kind=kind, limit=cfg.limit, progress=lb,
                                        fingerprint_version=cfg.fingerprint_version)
    X = table.vectors
    finite = np.all(np.isfinite(X), axis=1)
    if not finite.all():  # cannot happen through the sidecar; be safe with hand-made databases
        X = X[finite]
    n = len(X)
    if n < cfg.min_samples:
        raise DiscoveryError(f"only {n} usable fingerprints; need at least {cfg.min_samples} (--min-samples)")
    done("load", t0)

    t0 = stage("import")
    configure_numba()
    from scipy.spatial import cKDTree
    from sklearn.decomposition import PCA
    import umap

    done("import", t0)

    t0 = stage("pca")
    k = min(cfg.pca_components, n - 1)
    pca = PCA(n_components=k, random_state=cfg.seed)
    Z = pca.fit_transform(X)
    done("pca", t0)

    t0 = stage("umap")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(cfg.umap_neighbors, n - 1), min_dist=cfg.umap_min_dist,
                        random_state=cfg.seed, low_memory=True,
                        n_jobs=1 if cfg.seed is not None else -1)
    xy, n_fit = _embed(reducer, Z, cfg.umap_max_fit, cfg.seed, cKDTree)
    done("umap", t0)

    t0 = stage("cluster")
    mcs = cfg.min_cluster_size or int(min(1000, max(10, n // 100)))
    # min_samples sets the k of HDBSCAN's core distances: k = min_cluster_size (the library
    # default) costs O(n k) and took 80 s at 100k points; 50 gives the same clusters in ~7 s
    hms = cfg.hdbscan_min_samples or min(mcs, 50)
    clusterer, backend = _make_clusterer(cfg.clusterer, mcs, hms)
    clusterer.fit(xy)
    labels = np.asarray(clusterer.labels_, dtype=np.int64)
    probs = np.asarray(clusterer.probabilities_, dtype=np.float64)
    done("cluster", t0)

    t0 = stage("zones")
    version = cfg.fingerprint_version  # every zone with this version's thresholds
    clusters = []
    for cid in sorted(int(c) for c in set(labels.tolist()) if c >= 0):
        m = labels == cid
        centroid = X[m].mean(axis=0)
        d = describe(centroid, version)
        clusters.append({
            "cluster_id": cid,
            "size": int(m.sum()),
            "centroid": [float(v) for v in centroid],
            "centroid_pca": [float(v) for v in Z[m].mean(axis=0)],
            "centroid_2d": [float(v) for v in xy[m].mean(axis=0)],
            "radius": float(np.percentile(np.linalg.norm(X[m] - centroid, axis=1), 95)),
            **d,
        })
    cluster_zone = {c["cluster_id"]: c["zone"] for c in clusters}
    point_zone = [zones.classify(v, version).zone for v in tqdm(X, desc="point zones", leave=False, disable=not cfg.progress,
                                                         mininterval=0.5)]
    zone_col = [cluster_zone.get(int(l), pz) for l, pz in zip(labels, point_zone)]
    done("zones", t0)

    t0 = stage("metrics")
    metrics = _metrics(X, Z, xy, labels, pca, clusters, zone_col, cfg.seed)
    nn = cKDTree(Z).query(Z, k=2)[0][:, 1]
    metrics["nn_distance_p99"] = float(np.percentile(nn, 99))
    done("metrics", t0)

    t0 = stage("write")
    models = sorted({m for (m,) in conn.execute(
        "SELECT DISTINCT model FROM fingerprints WHERE fingerprint_version = ?", (version,)) if m})
    interp = pca_interpretation.interpret(
        pca.mean_, pca.components_, pca.explained_variance_, pca.explained_variance_ratio_,
        {"description": f"discovery run {run_id} over {cfg.db}", "db": os.path.abspath(cfg.db), "models": models,
         "n_fingerprints": n, "computed_at": time.time(), "run_id": run_id}, fingerprint_version=version)
    keep = np.flatnonzero(finite)
    writers = _writers(table, keep, xy, Z, labels, probs, zone_col, point_zone, clusters, pca, reducer, clusterer,
                       interp, cfg.plot)
    timings_doc = dict(timings)
    manifest = {
        "run_id": run_id,
        "fingerprint_version": version,
        "created_at": time.time(),
        "db": os.path.abspath(cfg.db),
        "n_points": n,
        "parameters": {**params_doc, "umap_fit_points": n_fit, "min_cluster_size_used": mcs,
                       "hdbscan_min_samples_used": hms,
                       "pca_components_used": k,
                       "clusterer_backend": backend},
        "metrics": metrics,
        "timings_s": timings_doc,
        "versions": _versions(),
        "models": models,
    }
    write_artifact_set(cfg.output_dir, writers, manifest)
    done("write", t0)
    bar.close()
    store.finish_run(conn, run_id, status="completed", n_fingerprints=n, n_clusters=len(clusters),
                     noise_fraction=metrics["noise_fraction"], metrics={**metrics, "timings_s": timings},
                     clusters=clusters)
    conn.close()
    return DiscoveryResult(run_id, os.path.abspath(cfg.output_dir), n, len(clusters), metrics["noise_fraction"],
                           timings, metrics)


def _embed(reducer: Any, Z: np.ndarray, max_fit: int, seed: int | None, cKDTree: Any) -> tuple[np.ndarray, int]:
    """2-D map of every point. UMAP's cost grows faster than the data (and dominated the 100k
    run), so above ``max_fit`` points it is fitted on a random subset and every other point is
    placed at the inverse-distance weighted mean of its 10 nearest fitted points in PCA space:
    the same rule /classify uses for new fingerprints, so stored and new points land alike."""
    n = len(Z)
    if not max_fit or n <= max_fit:
        return np.asarray(reducer.fit_transform(Z), dtype=np.float64), n
    rng = np.random.default_rng(seed if seed is not None else 0)
    fit = np.sort(rng.choice(n, size=max_fit, replace=False))
    xy = np.empty((n, 2))
    xy[fit] = np.asarray(reducer.fit_transform(Z[fit]), dtype=np.float64)
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    d, idx = cKDTree(Z[fit]).query(Z[rest], k=10)
    w = 1.0 / (d + 1e-9)
    w /= w.sum(axis=1, keepdims=True)
    xy[rest] = np.einsum("mk,mkd->md", w, xy[fit][idx])
    return xy, max_fit


def _make_clusterer(choice: str, min_cluster_size: int, min_samples: int | None) -> tuple[Any, str]:
    if choice in ("auto", "hdbscan"):
        try:
            import hdbscan

            return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                   prediction_data=True), "hdbscan"
        except ImportError:
            if choice == "hdbscan":
                raise DiscoveryError("--clusterer hdbscan: the hdbscan package is not installed") from None
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples), "sklearn"


def _metrics(X: np.ndarray, Z: np.ndarray, xy: np.ndarray, labels: np.ndarray, pca: Any,
             clusters: list[dict], zone_col: list[str], seed: int | None) -> dict[str, Any]:
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed if seed is not None else 0)
    n = len(X)
    noise = float(np.mean(labels < 0))
    out: dict[str, Any] = {
        "n_points": n,
        "n_clusters": len(clusters),
        "noise_fraction": round(noise, 6),
        "cluster_sizes": {str(c["cluster_id"]): c["size"] for c in clusters},
        "cluster_zones": {str(c["cluster_id"]): c["zone"] for c in clusters},
        "zone_counts": dict(Counter(zone_col)),
        "pca_explained_variance_ratio": [round(float(v), 6) for v in pca.explained_variance_ratio_],
        "pca_explained_variance_total": round(float(np.sum(pca.explained_variance_ratio_)), 6),
    }
    clustered = labels >= 0
    if len(clusters) >= 2:
        idx = np.flatnonzero(clustered)
        s = rng.choice(idx, size=min(5000, len(idx)), replace=False)
        out["silhouette_2d"] = round(float(silhouette_score(xy[s], labels[s])), 6)
    s = rng.choice(n, size=min(1000, n), replace=False)
    if len(s) > 12:
        out["trustworthiness_10nn"] = round(float(trustworthiness(Z[s], xy[s], n_neighbors=10)), 6)
    return out


def _writers(table: Any, keep: np.ndarray, xy: np.ndarray, Z: np.ndarray, labels: np.ndarray, probs: np.ndarray,
             zone_col: list[str], point_zone: list[str], clusters: list[dict], pca: Any, reducer: Any,
             clusterer: Any, interp: dict, plot: bool) -> dict[str, Any]:
    import joblib

    def points(p: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
        t = pa.table({
            "id": pa.array(table.ids[keep], pa.int64()),
            "request_id": pa.array(pick(table.request_ids), pa.string()),
            "session_id": pa.array(pick(table.session_ids), pa.string()),
            "step": pa.array(pick(table.steps), pa.int64()),
            "kind": pa.array(pick(table.kinds), pa.string()),
            "x": pa.array(xy[:, 0], pa.float32()),
            "y": pa.array(xy[:, 1], pa.float32()),
            "cluster_id": pa.array(labels, pa.int32()),
            "cluster_probability": pa.array(probs, pa.float32()),
            "zone": pa.array(zone_col, pa.string()),
            "point_zone": pa.array(point_zone, pa.string()),
        })
        pq.write_table(t, p, compression="zstd")

    def dump_json(obj: Any) -> Any:
        def w(p: str) -> None:
            with open(p, "w") as f:
                json.dump(obj, f, indent=1)
        return w

    def pca_npz(p: str) -> None:
        with open(p, "wb") as f:
            np.savez(f, mean=pca.mean_, components=pca.components_, explained_variance=pca.explained_variance_,
                     explained_variance_ratio=pca.explained_variance_ratio_)

    def index_npz(p: str) -> None:
        with open(p, "wb") as f:
            np.savez(f, pca=Z.astype(np.float32), xy=xy.astype(np.float32), labels=labels.astype(np.int32),
                     probabilities=probs.astype(np.float32))

    def dump_model(obj: Any) -> Any:
        return lambda p: joblib.dump(obj, p, compress=3)

    writers: dict[str, Any] = {
        "points.parquet": points,
        "centroids.json": dump_json({"clusters": clusters}),
        "pca.npz": pca_npz,
        "index.npz": index_npz,
        "pca_interpretation.json": dump_json(interp),
        "pca.joblib": dump_model(pca),
        "umap.joblib": dump_model(reducer),
        "clusterer.joblib": dump_model(clusterer),
    }
    if plot:
        writers["map.png"] = lambda p: _plot(p, xy, labels, zone_col, clusters)
    return writers


def _plot(path: str, xy: np.ndarray, labels: np.ndarray, zone_col: list[str], clusters: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    colors = np.array([NOISE_COLOR if l < 0 else ZONE_COLORS.get(z, "#000000") for l, z in zip(labels, zone_col)])
    size = max(0.5, min(6.0, 20000 / max(len(xy), 1)))
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=size, linewidths=0, rasterized=True)
    for c in clusters:
        cx, cy = c["centroid_2d"]
        ax.annotate(f"{c['cluster_id']}: {c['zone']}", (cx, cy), fontsize=8, ha="center",
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7})
    handles = [plt.Line2D([], [], marker="o", ls="", color=col, label=z) for z, col in ZONE_COLORS.items()]
    handles.append(plt.Line2D([], [], marker="o", ls="", color=NOISE_COLOR, label="noise"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_title(f"Attention fingerprint map: {len(xy)} points, {len(clusters)} clusters")
    ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
