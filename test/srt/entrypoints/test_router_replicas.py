"""Two real server replicas behind the stock sglang-router (PyPI, 0.3.2) and one real sidecar.

The replicas capture every request through ``--attention-capture-default fingerprint``
(the router drops per-request capture fields) and push fingerprints over ZMQ to
``python -m sglang.srt.attention_sidecar``, which stores them in SQLite. Checks: the
router registers both replicas from /server_info and /model_info; 16 concurrent
streaming chats through it all complete with attention entries, both replicas serve
some, and the sidecar stores every step and every request summary; after one replica is
killed mid-run the router keeps serving from the other and no stream hangs.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Iterator

import httpx
import pytest

pytest.importorskip("sglang_router", reason="needs the test extra: pip install sglang-router==0.3.2")

from sglang.bench_router import StreamResult, make_prompts, stream_chat  # noqa: E402
from sglang.test.replica_set import Proc, ReplicaSet, Sidecar, metric, requests_served  # noqa: E402

MAX_TOKENS = 16
STREAM_TIMEOUT = 120  # seconds for any one stream; a hang fails the test instead of blocking CI


class Cluster:
    def __init__(self, rs: ReplicaSet, sidecar: Sidecar, replicas: list[Proc], router: Proc) -> None:
        self.rs, self.sidecar, self.replicas, self.router = rs, sidecar, replicas, router


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with ReplicaSet(str(tmp_path_factory.mktemp("router"))) as rs:
        side = rs.start_sidecar("store")
        reps = rs.start_replicas(2, ["--served-model-name", "smol", "--max-total-tokens", "4096",
                                     "--attention-capture-default", "fingerprint",
                                     "--attention-sidecar-url", side.zmq_url], threads=1)
        router = rs.start_router(reps, policy="round_robin")
        yield Cluster(rs, side, reps, router)


async def _streams(url: str, prompts: list[str], max_tokens: int = MAX_TOKENS) -> list[StreamResult]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(STREAM_TIMEOUT)) as client:
        return list(await asyncio.wait_for(
            asyncio.gather(*(stream_chat(client, url, p, max_tokens) for p in prompts)), STREAM_TIMEOUT + 30))


def _stored(side: Sidecar, rids: set[str], timeout: float = 30) -> tuple[dict[str, int], set[str]]:
    """Step rows per request id and the ids with a request summary, once all of ``rids`` have one."""
    deadline = time.monotonic() + timeout
    while True:
        httpx.post(side.url + "/storage/flush", timeout=30).raise_for_status()
        with sqlite3.connect(f"file:{side.db_path}?mode=ro", uri=True, timeout=30) as conn:
            summaries = {r[0] for r in conn.execute("SELECT request_id FROM fingerprints WHERE kind = 'request'")}
            steps = dict(conn.execute("SELECT request_id, COUNT(*) FROM fingerprints WHERE kind = 'step' "
                                      "GROUP BY request_id").fetchall())
        if rids <= summaries or time.monotonic() > deadline:
            return steps, summaries
        time.sleep(0.3)


def test_router_registers_replicas_from_info_endpoints(cluster: Cluster) -> None:
    # What the router learned from /server_info and /model_info: a wrong type in either
    # body would leave these out (the router parses them strictly).
    body = httpx.get(cluster.router.url + "/workers", timeout=10).json()
    workers = {w["url"]: w for w in body["workers"]}
    assert set(workers) == {r.url for r in cluster.replicas}
    for w in workers.values():
        assert w["model_id"] == "smol" and w["is_healthy"]
        assert w["metadata"]["served_model_name"] == "smol"
        assert w["metadata"]["architectures"] == '["LlamaForCausalLM"]'
        assert w["metadata"]["model_path"].endswith(".gguf")
    models = httpx.get(cluster.router.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["smol"]
    # it found the new names: no fallback to the deprecated /get_ endpoints
    assert "falling back to '/get_" not in open(cluster.router.log_path, errors="replace").read()
    for rep in cluster.replicas:
        for new_name, old_name in (("/server_info", "/get_server_info"), ("/model_info", "/get_model_info")):
            a, b = httpx.get(rep.url + new_name, timeout=30), httpx.get(rep.url + old_name, timeout=30)
            assert a.status_code == b.status_code == 200 and set(a.json()) == set(b.json())


def test_16_concurrent_streams_through_router(cluster: Cluster) -> None:
    before = [requests_served(r) for r in cluster.replicas]
    results = asyncio.run(_streams(cluster.router.url, make_prompts(16, seed=1)))
    bad = [r for r in results if not r.ok]
    assert not bad, bad
    for r in results:
        assert r.finish_reason in ("length", "stop") and r.rid
        # capture happened with no capture field in the request: the server default
        assert r.attention_entries >= 1 and r.attention_entries == r.output_tokens
    served = [requests_served(r) - b for r, b in zip(cluster.replicas, before)]
    assert sum(served) == 16 and all(s > 0 for s in served), served
    # the sidecar got every request summary, and every step of every request
    rids = {r.rid for r in results if r.rid}
    assert len(rids) == 16
    steps, summaries = _stored(cluster.sidecar, rids)
    assert rids <= summaries, f"missing summaries: {rids - summaries}"
    assert {rid: steps.get(rid, 0) for rid in rids} == {r.rid: r.attention_entries for r in results}
    assert sum(metric(r, "sglang:capture_sidecar_dropped_total") for r in cluster.replicas) == 0


def test_kill_one_replica_mid_run(cluster: Cluster) -> None:
    survivor, victim = cluster.replicas

    async def scenario() -> tuple[list[StreamResult], list[StreamResult]]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(STREAM_TIMEOUT)) as client:
            # long enough that the kill lands while every stream is still generating (ignore_eos:
            # a reply that ends early on the victim would count as served there, not on the survivor)
            inflight = [asyncio.ensure_future(stream_chat(client, cluster.router.url, p, 64, ignore_eos=True))
                        for p in make_prompts(8, seed=2)]
            t0 = time.monotonic()
            while victim.alive() and time.monotonic() - t0 < 60:
                if metric(victim, "sglang:http_requests_in_flight") >= 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            victim.kill()  # SIGKILL to its process group: server and scheduler die at once
            # nothing hangs: every stream ends (completed or cut) within the bound
            first = await asyncio.wait_for(asyncio.gather(*inflight), STREAM_TIMEOUT + 30)
            after = await asyncio.wait_for(asyncio.gather(
                *(stream_chat(client, cluster.router.url, p, MAX_TOKENS) for p in make_prompts(8, seed=3))),
                STREAM_TIMEOUT + 30)
            return list(first), list(after)

    before = requests_served(survivor)
    first, after = asyncio.run(scenario())
    assert not victim.alive()
    ok = [r for r in first if r.ok]
    cut = [r for r in first if not r.ok]
    assert ok, "the surviving replica's streams must complete"
    assert cut, "the killed replica had streams in flight; they must end with an error, not hang"
    assert all(r.error for r in cut)
    # the router keeps serving: every request after the kill completes on the survivor
    bad = [r for r in after if not r.ok]
    assert not bad, bad
    assert all(r.attention_entries >= 1 for r in after)
    assert requests_served(survivor) - before >= len(ok) + len(after)
