"""Run a discovery job over a fingerprint database and write an artifact set.

    python examples/attention_explorer/discovery/run_discovery.py \\
        --db ./attention_data.db --output-dir ./discovery_artifacts --min-samples 100

A run clusters the fingerprints of one version (``--fingerprint-version``, default 2: the
engine's default, sink-aware definition); a database with none of that version is an error that
names the versions it holds. Prints one JSON line with the run id, the fingerprint version,
counts and stage timings. Exit code 2 on bad input (unreadable database, no or too few
fingerprints of the version, invalid options).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline import DiscoveryConfig, DiscoveryError, run_discovery  # noqa: E402
from sgl_kernel.zones import DEFAULT_FINGERPRINT_VERSION, FINGERPRINT_VERSIONS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="PCA -> UMAP -> HDBSCAN discovery over attention fingerprints")
    ap.add_argument("--db", required=True, help="fingerprint SQLite database (written by the attention sidecar)")
    ap.add_argument("--output-dir", required=True, help="artifact folder (replaced atomically, manifest last)")
    ap.add_argument("--min-samples", type=int, default=100, help="refuse to run with fewer fingerprints")
    ap.add_argument("--pca-components", type=int, default=8, help="intermediate PCA size (20-D -> this)")
    ap.add_argument("--umap-neighbors", type=int, default=15)
    ap.add_argument("--umap-min-dist", type=float, default=0.0)
    ap.add_argument("--umap-max-fit", type=int, default=30000,
                    help="fit UMAP on at most N points, place the others by nearest neighbours (0 = all)")
    ap.add_argument("--min-cluster-size", type=int, default=None, help="HDBSCAN; default max(10, n/100), <= 1000")
    ap.add_argument("--hdbscan-min-samples", type=int, default=None, help="HDBSCAN min_samples (default: min(min cluster size, 50))")
    ap.add_argument("--kind", choices=["all", "step", "request"], default="all")
    ap.add_argument("--fingerprint-version", type=int, choices=list(FINGERPRINT_VERSIONS),
                    default=DEFAULT_FINGERPRINT_VERSION,
                    help="cluster the fingerprints of this version only (default %(default)s; rows stored before "
                         "messages carried a version are version 1)")
    ap.add_argument("--limit", type=int, default=None, help="use only the most recent N fingerprints")
    ap.add_argument("--seed", type=int, default=42, help="random seed (-1: unseeded, lets UMAP use threads)")
    ap.add_argument("--clusterer", choices=["auto", "hdbscan", "sklearn"], default="auto")
    ap.add_argument("--no-plot", action="store_true", help="skip map.png")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = DiscoveryConfig(
        db=a.db, output_dir=a.output_dir, min_samples=a.min_samples, pca_components=a.pca_components,
        umap_neighbors=a.umap_neighbors, umap_min_dist=a.umap_min_dist, umap_max_fit=a.umap_max_fit,
        min_cluster_size=a.min_cluster_size,
        hdbscan_min_samples=a.hdbscan_min_samples, kind=a.kind, fingerprint_version=a.fingerprint_version,
        limit=a.limit,
        seed=None if a.seed < 0 else a.seed, plot=not a.no_plot, clusterer=a.clusterer, progress=not a.no_progress)
    try:
        res = run_discovery(cfg)
    except DiscoveryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": res.run_id, "output_dir": res.output_dir,
                      "fingerprint_version": cfg.fingerprint_version, "n_points": res.n_points,
                      "n_clusters": res.n_clusters, "noise_fraction": res.noise_fraction, "timings_s": res.timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
