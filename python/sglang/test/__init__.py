"""Test and benchmark utilities; nothing at serving time imports this package.

Like upstream SGLang's ``sglang.test``, it holds what tests, benchmarks and examples share,
kept out of the runtime package ``sglang.srt``:

* ``sidecar_service``: run a sidecar (``python -m sglang.srt.attention_sidecar`` or
  ``rapids_sidecar.py``) as a real subprocess, push fingerprint frames to it, and build one
  shared synthetic discovery run per test session;
* ``synthetic``: synthetic fingerprints with known clusters, and a fingerprint database of them;
* ``sidecar_bench``: the sidecar benchmarks (``python -m sglang.test.sidecar_bench ingest|classify``);
* ``replica_set``: server replicas behind the stock ``sglang-router`` plus a storage sidecar, as
  real processes (``python -m sglang.bench_router`` and the router tests).

Importing the package itself imports nothing else.
"""
