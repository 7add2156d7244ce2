"""Synthetic fingerprints with known clusters, for tests and benchmarks.

Each cluster is a prototype 16-bin distance histogram plus a normalized entropy; samples are
Dirichlet draws around the prototype (``concentration`` controls the spread) turned into
fingerprints by ``sgl_kernel.zones.fingerprint_from_hist``, so they are valid fingerprints
whose zone follows from the prototype. Prototypes are far apart relative to the spread,
which is what "known clusters" means for the adjusted-Rand tests.
"""
from __future__ import annotations

import numpy as np

from sgl_kernel.zones import FINGERPRINT_DIM, N_HIST_BINS, fingerprint_from_hist

# (name, {bin: weight}, entropy): one prototype per zone-like behaviour
PROTOTYPES: list[tuple[str, dict[int, float], float]] = [
    ("local", {0: 0.7, 1: 0.2, 2: 0.1}, 0.15),
    ("semantic", {0: 0.1, 4: 0.35, 5: 0.35, 6: 0.2}, 0.45),
    ("long", {0: 0.15, 9: 0.35, 10: 0.35, 11: 0.15}, 0.35),
    ("ripple", {0: 0.35, 3: 0.25, 6: 0.2, 9: 0.2}, 0.5),
    ("diffuse", {b: 1.0 / N_HIST_BINS for b in range(N_HIST_BINS)}, 0.9),
]


def make_clusters(n: int, n_clusters: int = 5, seed: int = 0, concentration: float = 400.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fingerprints float64[n, 20] and their true cluster labels int[n] (shuffled)."""
    if not 1 <= n_clusters <= len(PROTOTYPES):
        raise ValueError(f"n_clusters must be in 1..{len(PROTOTYPES)}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_clusters)
    X = np.empty((n, FINGERPRINT_DIM))
    for c in range(n_clusters):
        _, bins, ent = PROTOTYPES[c]
        proto = np.full(N_HIST_BINS, 1e-3)
        for b, w in bins.items():
            proto[b] += w
        proto /= proto.sum()
        idx = np.flatnonzero(labels == c)
        hists = rng.dirichlet(proto * concentration, size=len(idx))
        ents = np.clip(ent + rng.normal(0, 0.02, size=len(idx)), 0.0, 1.0)
        for i, h, e in zip(idx, hists, ents):
            X[i] = fingerprint_from_hist(h, e)
    return X, labels


def write_db(path: str, X: np.ndarray, labels: np.ndarray | None = None, model: str = "synthetic") -> None:
    """Store fingerprints in a sidecar database; request_id carries the true label as "c<k>-<i>"."""
    import time

    from sglang.srt.attention_sidecar import store
    from sglang.srt.attention_sidecar.wire import FingerprintMessage

    conn = store.connect(path)
    now = time.time()
    msgs = [
        FingerprintMessage(f"c{int(labels[i]) if labels is not None else 0}-{i}", None, "step", i, None, None, model,
                           now, now, tuple(float(v) for v in X[i]))
        for i in range(len(X))
    ]
    for s in range(0, len(msgs), 50000):
        store.insert_messages(conn, msgs[s : s + 50000])
    conn.close()
