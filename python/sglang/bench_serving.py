"""``python -m sglang.bench_serving``: load test of a running server, printed as JSON.

An asyncio client sends N prompts at a request rate (Poisson arrivals; ``inf`` sends all
at once) with at most ``--max-concurrency`` in flight, streams every response and
records time to first token (TTFT), time per output token (TPOT, per request:
(latency - TTFT) / (output tokens - 1)), inter-token latency (ITL, between streamed
chunks, divided over the tokens they carry), end-to-end latency and throughput.

Backends: ``sglang`` (POST /generate), ``openai-chat`` (/v1/chat/completions),
``openai`` (/v1/completions). ``--launch-server`` starts ``python -m
sglang.launch_server`` itself; ``--compare-offline`` then runs the same prompts through
``sglang.Engine`` in this process after the server has been stopped (so the two never
compete for the CPU), with the same concurrency, and reports the ratio.

Prompts are synthetic English sentences drawn with a fixed seed, or a JSONL file with
``{"prompt": ..., "output_len": ...}`` per line. Outputs use ``ignore_eos`` so every
request generates exactly its output length.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import httpx

_WORDS = ("the river city morning light history science music garden winter market ocean mountain story "
          "language machine teacher window village engine bridge forest question answer problem number "
          "system memory signal planet energy color letter friend journey silence harvest library kitchen "
          "theory window paper stone cloud road summer network pattern reason detail moment picture").split()
_TASKS = ["Write a short story about", "Explain in simple terms", "Summarize the following notes about",
          "List three facts about", "Describe a day in the life of", "Give advice to a student about",
          "Compare and contrast", "Write a poem about"]


@dataclass
class BenchRequest:
    prompt: str
    output_len: int


@dataclass
class RequestResult:
    ok: bool = False
    ttft: float = 0.0
    latency: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    error: str = ""


def synthetic_requests(n: int, input_len: int, output_len: int, seed: int) -> list[BenchRequest]:
    """Deterministic varied prompts of about ``input_len`` words."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        topic = " ".join(rng.choice(_WORDS) for _ in range(3))
        filler = " ".join(rng.choice(_WORDS) for _ in range(max(input_len - 8, 0)))
        reqs.append(BenchRequest(f"{rng.choice(_TASKS)} {topic}. Notes: {filler}.", output_len))
    return reqs


def load_requests(path: str, n: int, default_output_len: int) -> list[BenchRequest]:
    reqs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                reqs.append(BenchRequest(d["prompt"], int(d.get("output_len", default_output_len))))
            if len(reqs) >= n:
                break
    if not reqs:
        raise SystemExit(f"error: --dataset-path {path!r} holds no requests")
    return reqs


# ---- client side ---------------------------------------------------------------------
def _payload(backend: str, model: str, r: BenchRequest) -> tuple[str, dict[str, Any]]:
    if backend == "sglang":
        return "/generate", {"text": r.prompt, "stream": True, "sampling_params": {
            "max_new_tokens": r.output_len, "temperature": 0.0, "ignore_eos": True}}
    common = {"model": model, "max_tokens": r.output_len, "temperature": 0.0, "ignore_eos": True, "stream": True,
              "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    if backend == "openai-chat":
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": r.prompt}]}
    return "/v1/completions", {**common, "prompt": r.prompt}


async def _one(client: httpx.AsyncClient, backend: str, model: str, r: BenchRequest,
               headers: dict[str, str]) -> RequestResult:
    path, body = _payload(backend, model, r)
    res = RequestResult()
    start = time.perf_counter()
    last = start
    tokens = 0
    try:
        async with client.stream("POST", path, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = chunk["error"].get("message", "error")
                    return res
                now = time.perf_counter()
                if backend == "sglang":
                    meta = chunk.get("meta_info", {})
                    new = int(meta.get("completion_tokens", tokens)) - tokens
                    res.prompt_tokens = int(meta.get("prompt_tokens", 0))
                else:
                    usage = chunk.get("usage")
                    if usage:
                        res.prompt_tokens = int(usage.get("prompt_tokens", 0))
                    if not chunk.get("choices"):
                        continue  # the final usage-only chunk
                    if usage and usage.get("completion_tokens") is not None:
                        # continuous_usage_stats: exact token count per chunk
                        new = int(usage["completion_tokens"]) - tokens
                    else:
                        ch = chunk["choices"][0]
                        piece = ch.get("text") if backend == "openai" else (ch.get("delta") or {}).get("content")
                        new = 1 if piece else 0
                if new <= 0:
                    continue
                if tokens == 0:
                    res.ttft = now - start
                else:
                    res.itl.extend([(now - last) / new] * new)
                tokens += new
                last = now
        res.latency = time.perf_counter() - start
        res.output_tokens = tokens
        res.ok = tokens > 0
        if not res.ok:
            res.error = "no tokens received"
    except Exception as e:  # a failed request is counted, the run goes on
        res.error = f"{type(e).__name__}: {e}"
    return res


async def run_client(base_url: str, backend: str, model: str, reqs: list[BenchRequest], request_rate: float,
                     max_concurrency: int, seed: int, api_key: str | None = None,
                     progress: bool = True) -> tuple[list[RequestResult], float]:
    rng = random.Random(seed)
    sem = asyncio.Semaphore(max_concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max_concurrency + 4, max_keepalive_connections=max_concurrency + 4)
    bar = _bar(len(reqs), "server") if progress else None
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(None, connect=30.0),
                                 limits=limits) as client:
        async def limited(r: BenchRequest) -> RequestResult:
            async with sem:
                out = await _one(client, backend, model, r, headers)
            if bar is not None:
                bar.update(1)
            return out

        start = time.perf_counter()
        tasks = []
        for r in reqs:
            tasks.append(asyncio.create_task(limited(r)))
            if request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(request_rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return list(results), duration


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


# ---- offline engine --------------------------------------------------------------------
def run_offline(engine_kwargs: dict[str, Any], backend: str, reqs: list[BenchRequest], max_concurrency: int,
                progress: bool = True) -> tuple[list[RequestResult], float]:
    """The same prompts through sglang.Engine, streamed, at the same concurrency."""
    import sglang

    engine = sglang.Engine(**engine_kwargs)
    try:
        tok = engine.tokenizer

        def ids_of(r: BenchRequest) -> list[int]:
            # Same token ids the server builds for this backend.
            if backend == "openai-chat":
                text = tok.apply_chat_template([{"role": "user", "content": r.prompt}], tokenize=False,
                                               add_generation_prompt=True)
                return list(tok.encode(text, add_special_tokens=False))
            return list(tok.encode(r.prompt))

        bar = _bar(len(reqs), "offline") if progress else None

        async def one(r: BenchRequest, sem: asyncio.Semaphore) -> RequestResult:
            res = RequestResult()
            async with sem:
                start = last = time.perf_counter()
                tokens = 0
                try:
                    agen = await engine.async_generate(input_ids=ids_of(r), stream=True, sampling_params={
                        "max_new_tokens": r.output_len, "temperature": 0.0, "ignore_eos": True})
                    async for item in agen:
                        new = len(item.get("new_token_ids") or ())
                        now = time.perf_counter()
                        if new:
                            if tokens == 0:
                                res.ttft = now - start
                            else:
                                res.itl.extend([(now - last) / new] * new)
                            tokens += new
                            last = now
                        res.prompt_tokens = int(item["meta_info"].get("prompt_tokens", 0))
                    res.latency = time.perf_counter() - start
                    res.output_tokens = tokens
                    res.ok = tokens > 0
                except Exception as e:
                    res.error = f"{type(e).__name__}: {e}"
            if bar is not None:
                bar.update(1)
            return res

        async def all_() -> tuple[list[RequestResult], float]:
            sem = asyncio.Semaphore(max_concurrency)
            t0 = time.perf_counter()
            out = await asyncio.gather(*(one(r, sem) for r in reqs))
            return list(out), time.perf_counter() - t0

        # One warm-up request so both sides are measured after their first-call costs.
        engine.generate(input_ids=ids_of(reqs[0]), sampling_params={"max_new_tokens": 2, "temperature": 0.0})
        results, duration = engine.loop.run_until_complete(all_())
        if bar is not None:
            bar.close()
        return results, duration
    finally:
        engine.shutdown()


# ---- statistics ------------------------------------------------------------------------
def _pct(xs: Sequence[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _dist(xs: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    return {"mean": (statistics.fmean(xs) if xs else 0.0) * scale, "p50": _pct(xs, 50) * scale,
            "p90": _pct(xs, 90) * scale, "p99": _pct(xs, 99) * scale, "max": (max(xs) if xs else 0.0) * scale}


def summarize(results: list[RequestResult], duration: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpot = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    errors = sorted({r.error for r in results if not r.ok})
    return {
        "completed": len(ok), "failed": len(results) - len(ok), "errors": errors[:5],
        "duration_s": duration,
        "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_throughput_tok_s": out_tokens / duration if duration else 0.0,
        "total_throughput_tok_s": (in_tokens + out_tokens) / duration if duration else 0.0,
        "ttft_ms": _dist([r.ttft for r in ok]),
        "tpot_ms": _dist(tpot),
        "itl_ms": _dist([x for r in ok for x in r.itl]),
        "e2e_latency_ms": _dist([r.latency for r in ok]),
    }


# ---- server lifecycle ------------------------------------------------------------------
def launch_server(port: int, server_args: list[str], timeout: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--port", str(port), "--log-level", "warning", *server_args]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with code {proc.returncode} while starting")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"error: the server did not become healthy within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _model_name(base_url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return httpx.get(f"{base_url}/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]
    except Exception:
        return "default"


def engine_kwargs_from(server_args: list[str]) -> dict[str, Any]:
    """The --server-args string as sglang.Engine keyword arguments (HTTP-only flags dropped)."""
    from sglang.srt.server_args import ServerArgs

    p = argparse.ArgumentParser(add_help=False)
    ServerArgs.add_cli_args(p)
    ns = vars(p.parse_args(server_args))
    return {k: v for k, v in ns.items() if k not in ("host", "port", "api_key", "log_level")}


# ---- CLI -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sglang.bench_serving", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=["sglang", "openai-chat", "openai"], default="openai-chat",
                   help="sglang = /generate, openai-chat = /v1/chat/completions, openai = /v1/completions")
    p.add_argument("--base-url", default=None, help="server URL (default http://HOST:PORT)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--model", default=None, help="model name to send (default: the server's /v1/models)")
    p.add_argument("--api-key", default=None, help="Bearer key for a server started with --api-key")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--dataset-path", default=None, help="JSONL with prompt and output_len (default: synthetic)")
    p.add_argument("--random-input-len", type=int, default=64, help="words per synthetic prompt")
    p.add_argument("--random-output-len", type=int, default=64, help="output tokens per request")
    p.add_argument("--request-rate", type=float, default=float("inf"), help="requests/s (Poisson); inf = all at once")
    p.add_argument("--max-concurrency", type=int, default=8, help="requests in flight at most")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup-requests", type=int, default=1, help="untimed requests before the run")
    p.add_argument("--launch-server", action="store_true", help="start python -m sglang.launch_server for the run")
    p.add_argument("--server-args", default="", help="extra launch_server / Engine flags, one quoted string")
    p.add_argument("--server-timeout", type=float, default=600.0, help="seconds to wait for the launched server")
    p.add_argument("--compare-offline", action="store_true",
                   help="also run the prompts through sglang.Engine in this process and report the ratio")
    p.add_argument("--output-file", default=None, help="also write the JSON result here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.num_prompts < 1:
        a_error = "--num-prompts must be at least 1"
        sys.stderr.write(f"python -m sglang.bench_serving: error: {a_error}\n")
        return 2
    if a.max_concurrency < 1 or a.request_rate <= 0:
        sys.stderr.write("python -m sglang.bench_serving: error: --max-concurrency and --request-rate must be > 0\n")
        return 2
    reqs = (load_requests(a.dataset_path, a.num_prompts, a.random_output_len) if a.dataset_path
            else synthetic_requests(a.num_prompts, a.random_input_len, a.random_output_len, a.seed))
    server_args = shlex.split(a.server_args)
    base_url = a.base_url or f"http://{a.host}:{a.port}"
    proc = launch_server(a.port, server_args, a.server_timeout) if a.launch_server else None
    try:
        model = a.model or _model_name(base_url, a.api_key)
        if a.warmup_requests:
            warm = [BenchRequest(reqs[0].prompt, 2)] * a.warmup_requests
            asyncio.run(run_client(base_url, a.backend, model, warm, float("inf"), a.max_concurrency, a.seed,
                                   a.api_key, progress=False))
        results, duration = asyncio.run(run_client(base_url, a.backend, model, reqs, a.request_rate,
                                                   a.max_concurrency, a.seed, a.api_key, not a.no_progress))
    finally:
        if proc is not None:
            stop_server(proc)
    report: dict[str, Any] = {
        "backend": a.backend, "base_url": base_url, "model": model, "num_prompts": len(reqs),
        "request_rate": a.request_rate if a.request_rate != float("inf") else "inf",
        "max_concurrency": a.max_concurrency, "input_words": a.random_input_len,
        "output_len": a.random_output_len, "server": summarize(results, duration),
    }
    if a.compare_offline:
        off, off_dur = run_offline(engine_kwargs_from(server_args), a.backend, reqs, a.max_concurrency,
                                   not a.no_progress)
        report["offline_engine"] = summarize(off, off_dur)
        srv = report["server"]["output_throughput_tok_s"]
        eng = report["offline_engine"]["output_throughput_tok_s"]
        report["server_vs_offline_throughput"] = srv / eng if eng else None
    text = json.dumps(report, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    print(text)
    if a.output_file:
        with open(a.output_file, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if report["server"]["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
