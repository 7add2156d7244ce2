"""``python -m sglang.bench_router``: replicas behind the stock sglang-router vs one replica direct.

Starts a fingerprint sidecar (``python -m sglang.srt.attention_sidecar`` storing to SQLite),
``--replicas`` servers with ``--attention-capture-default fingerprint`` feeding it, and
``sglang-router`` in front of them. The same streaming chat prompts then run twice with
the same concurrency: straight to replica 0, then through the router (all replicas).
Prints one JSON object: throughput of each run, their ratio, and the fingerprint
delivery rate to the sidecar, received / sent, where sent is what the streams show the
engines produced (one message per captured step, one request summary per finished
request) and the engines' own drop counters (``sglang:capture_sidecar_dropped``) say how
many never left the replicas.

On a machine with few cores, ``--threads-per-replica`` keeps replicas from fighting over
them; the direct run uses the same per-replica threads, so the ratio measures what a
second replica adds, not a different thread count.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

_TOPICS = ("rivers", "mountains", "libraries", "winter markets", "bridges", "old engines", "the ocean", "gardens",
           "planets", "villages", "music", "forests", "letters", "kitchens", "clouds", "networks")
_TASKS = ("Tell me a fact about", "Write two sentences about", "Explain simply", "Describe", "List things about")


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(_TASKS)} {rng.choice(_TOPICS)} ({i})." for i in range(n)]


@dataclass
class StreamResult:
    """One streamed chat completion, as the client saw it."""

    ok: bool = False
    status: int | None = None
    rid: str | None = None  # the server's request id (the chunk id without "chatcmpl-")
    chunks: int = 0
    output_tokens: int = 0  # from attention_output_tokens (capture on) or usage
    attention_entries: int = 0
    finish_reason: str | None = None
    adaptive_switch: dict[str, Any] | None = None
    ttft: float = 0.0
    latency: float = 0.0
    error: str = ""
    token_ids: list[int] = field(default_factory=list, repr=False)  # from attention_output_tokens
    switch_chunks: list[int] = field(default_factory=list)  # 1-based chunks carrying the adaptive switch


async def stream_chat(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, model: str = "smol",
                      **body_extra: Any) -> StreamResult:
    """POST one streaming chat completion and read it to the end; never raises."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **body_extra}
    res = StreamResult()
    t0 = time.perf_counter()
    usage_tokens = None
    try:
        async with client.stream("POST", url.rstrip("/") + "/v1/chat/completions", json=body) as r:
            res.status = r.status_code
            if r.status_code != 200:
                res.error = (await r.aread()).decode("utf-8", "replace")[:500]
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    res.ok = res.finish_reason is not None and not res.error
                    break
                c = json.loads(line[6:])
                if "error" in c:
                    res.error = json.dumps(c["error"])[:500]
                    continue
                if c.get("usage") and not c.get("choices"):
                    usage_tokens = int(c["usage"].get("completion_tokens", 0))
                    continue
                res.chunks += 1
                if res.chunks == 1:
                    res.ttft = time.perf_counter() - t0
                rid = c.get("id", "")
                res.rid = rid[len("chatcmpl-"):] if rid.startswith("chatcmpl-") else rid
                ch = (c.get("choices") or [{}])[0]
                res.attention_entries += len(ch.get("attention_tokens") or [])
                toks = ch.get("attention_output_tokens") or []
                res.output_tokens += len(toks)
                res.token_ids += [int(t["id"]) for t in toks]
                if ch.get("attention_adaptive_sampling") is not None:
                    res.adaptive_switch = ch["attention_adaptive_sampling"]
                    res.switch_chunks.append(res.chunks)
                if ch.get("finish_reason"):
                    res.finish_reason = ch["finish_reason"]
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    res.latency = time.perf_counter() - t0
    if usage_tokens is not None and not res.output_tokens:
        res.output_tokens = usage_tokens
    return res


async def run_load(url: str, prompts: list[str], max_tokens: int, concurrency: int, desc: str,
                   timeout: float = 300) -> tuple[list[StreamResult], float]:
    """All prompts with at most ``concurrency`` in flight; returns results and wall seconds."""
    from tqdm import tqdm

    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(prompts), desc=desc, file=sys.stderr, leave=False)

    async def one(client: httpx.AsyncClient, p: str) -> StreamResult:
        async with sem:
            r = await stream_chat(client, url, p, max_tokens, ignore_eos=True)
            bar.update(1)
            return r

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, p) for p in prompts))
        wall = time.perf_counter() - t0
    bar.close()
    return list(results), wall


def summarize(results: list[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    toks = sum(r.output_tokens for r in ok)
    return {
        "requests": len(results), "completed": len(ok), "failed": len(results) - len(ok),
        "wall_s": round(wall, 3), "output_tokens": toks,
        "request_throughput": round(len(ok) / wall, 3) if wall else 0.0,
        "output_throughput_tok_s": round(toks / wall, 2) if wall else 0.0,
        "mean_ttft_ms": round(1000 * statistics.mean(r.ttft for r in ok), 1) if ok else None,
        "mean_latency_ms": round(1000 * statistics.mean(r.latency for r in ok), 1) if ok else None,
        "errors": sorted({r.error for r in results if r.error})[:3],
    }


def sidecar_counts(sidecar_url: str, db_path: str) -> dict[str, int]:
    """Messages the sidecar stored, by kind (flushes its buffer first)."""
    httpx.post(sidecar_url + "/storage/flush", timeout=30)
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT kind, COUNT(*) FROM fingerprints GROUP BY kind").fetchall()
    return {k: int(n) for k, n in rows}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sglang.bench_router", description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=2, help="servers behind the router")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=16, help="output tokens per request (ignore_eos)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    p.add_argument("--threads-per-replica", type=int, default=1, help="torch threads per replica (0 = default)")
    p.add_argument("--max-total-tokens", type=int, default=4096, help="KV cache size of each replica")
    p.add_argument("--policy", default="round_robin", help="sglang-router --policy")
    p.add_argument("--model-path", default=None, help="model of every replica (default: the bundled SmolLM2)")
    p.add_argument("--log-dir", default=None, help="where process logs go (default: a temporary folder)")
    p.add_argument("--output", default=None, help="also write the JSON here")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("replicas", "num_prompts", "max_tokens", "concurrency", "max_total_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.threads_per_replica < 0:
        p.error("--threads-per-replica must be >= 0")
    if importlib.util.find_spec("sglang_router") is None:
        p.error("sglang-router is not installed: pip install sglang-router==0.3.2")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from sglang.test.replica_set import ROUTER_VERSION, ReplicaSet, metric, requests_served

    a = parse_args(argv)
    log_dir = a.log_dir or tempfile.mkdtemp(prefix="bench_router_")
    prompts = make_prompts(a.num_prompts, a.seed)
    with ReplicaSet(log_dir) as rs:
        side = rs.start_sidecar("store")
        flags = ["--served-model-name", "smol", "--max-total-tokens", str(a.max_total_tokens),
                 "--attention-capture-default", "fingerprint", "--attention-sidecar-url", side.zmq_url]
        if a.model_path:
            flags += ["--model-path", a.model_path]
        t0 = time.perf_counter()
        reps = rs.start_replicas(a.replicas, flags, threads=a.threads_per_replica or None)
        startup = time.perf_counter() - t0
        router = rs.start_router(reps, policy=a.policy)
        # warm every replica (first-request costs are not what is measured)
        warm: list[StreamResult] = []
        for rep in reps:
            warm += asyncio.run(run_load(rep.url, make_prompts(2, a.seed + 1), a.max_tokens, 2, "warm-up"))[0]
        direct, direct_wall = asyncio.run(run_load(reps[0].url, prompts, a.max_tokens, a.concurrency, "direct"))
        before = [requests_served(r) for r in reps]
        routed, routed_wall = asyncio.run(run_load(router.url, prompts, a.max_tokens, a.concurrency, "router"))
        per_replica = [int(requests_served(r) - b) for r, b in zip(reps, before)]
        dropped = int(sum(metric(r, "sglang:capture_sidecar_dropped_total") for r in reps))
        # Everything the engines produced for the sidecar: per finished request, one message
        # per captured step and one summary (requests cut short send no summary).
        done = [r for r in warm + direct + routed if r.ok]
        sent_steps = sum(r.attention_entries for r in done)
        sent_requests = len(done)
        deadline = time.monotonic() + 30
        while True:  # messages still in flight on the ZMQ socket: wait until the counts settle
            got = sidecar_counts(side.url, side.db_path or "")
            if (got.get("step", 0) >= sent_steps and got.get("request", 0) >= sent_requests) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    received = got.get("step", 0) + got.get("request", 0)
    sent = sent_steps + sent_requests
    d, r = summarize(direct, direct_wall), summarize(routed, routed_wall)
    out = {
        "bench": "router",
        "router": f"sglang-router {ROUTER_VERSION} (--policy {a.policy})",
        "replicas": a.replicas, "threads_per_replica": a.threads_per_replica or "default",
        "cpu_count": os.cpu_count(), "num_prompts": a.num_prompts, "max_tokens": a.max_tokens,
        "concurrency": a.concurrency, "capture": "fingerprint (--attention-capture-default)",
        "replica_startup_s": round(startup, 2),
        "direct_one_replica": d,
        "through_router": {**r, "requests_per_replica": per_replica},
        "router_vs_direct_throughput": round(r["output_throughput_tok_s"] / d["output_throughput_tok_s"], 3)
        if d["output_throughput_tok_s"] else None,
        "sidecar_delivery": {
            "sent": sent, "received": received, "rate": round(received / sent, 4) if sent else None,
            "sent_steps": sent_steps, "received_steps": got.get("step", 0),
            "sent_request_summaries": sent_requests, "received_request_summaries": got.get("request", 0),
            "engine_dropped": dropped,
        },
        "log_dir": log_dir,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
