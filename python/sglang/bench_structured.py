"""What structured outputs cost: a batch of JSON-schema-constrained requests against the
same batch unconstrained, and a new (uncached) schema arriving beside running streams.

    python -m sglang.bench_structured                      # starts a server (bundled model) itself
    python -m sglang.bench_structured --url http://127.0.0.1:30000 --batch 16

Prints JSON with:
* ``throughput``: output tokens per second of ``--batch`` concurrent requests, constrained
  by a JSON schema and unconstrained (same prompts, same run, alternating rounds), their
  ratio, and how many constrained outputs parsed and validated.
* ``new_schema``: time to first token of a request with a schema the server has never
  seen, sent while ``--batch`` streams run, against an unconstrained request sent the same
  way, and those streams' largest inter-token gap around each arrival against their gaps
  before it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from sglang.bench_utils import against_server

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "items": {"type": "array", "minItems": 6, "maxItems": 6, "items": {
            "type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                             "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
            "required": ["name", "qty"], "additionalProperties": False}},
    },
    "required": ["title", "items"],
    "additionalProperties": False,
}
TOPICS = ["groceries", "camping gear", "a bakery order", "office supplies", "a garden", "a toolbox",
          "a picnic", "a school bag"]


def _prompt(i: int) -> str:
    return f"<|im_start|>user\nList {TOPICS[i % len(TOPICS)]} as JSON with a title and items.<|im_end|>\n" \
           "<|im_start|>assistant\n"


def _generate(url: str, i: int, constrained: bool, max_tokens: int) -> dict[str, Any]:
    sp: dict[str, Any] = {"max_new_tokens": max_tokens, "temperature": 0.7, "seed": i}
    if constrained:
        sp["json_schema"] = json.dumps(SCHEMA)
    else:
        sp["ignore_eos"] = True
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post("/generate", json={"text": _prompt(i), "sampling_params": sp})
        r.raise_for_status()
        return r.json()


def _valid(text: str) -> bool:
    try:
        import jsonschema

        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except Exception:  # noqa: BLE001 - counted, not raised
        return False


def throughput(url: str, batch: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
    valid = total = 0
    finished = 0
    for _ in range(rounds):
        for kind in ("constrained", "unconstrained"):
            t = time.perf_counter()
            with ThreadPoolExecutor(batch) as pool:
                outs = list(pool.map(lambda i: _generate(url, i, kind == "constrained", max_tokens), range(batch)))
            wall = time.perf_counter() - t
            tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
            rates[kind].append(tokens / wall)
            if kind == "constrained":
                total += len(outs)
                finished += sum(o["meta_info"]["finish_reason"]["type"] == "stop" for o in outs)
                valid += sum(_valid(o["text"]) for o in outs)
    best = {k: max(v) for k, v in rates.items()}
    return {"batch": batch, "rounds": rounds, "tokens_per_s": rates, "best_tokens_per_s": best,
            "ratio_constrained_over_unconstrained": best["constrained"] / best["unconstrained"],
            "constrained_outputs": total, "finished_by_grammar": finished, "valid_json": valid}


class _Streams:
    """``n`` unconstrained streams; records every token event's time."""

    def __init__(self, url: str, n: int, max_tokens: int) -> None:
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(url, i, max_tokens)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, url: str, i: int, max_tokens: int) -> None:
        body = {"text": _prompt(i), "stream": True,
                "sampling_params": {"max_new_tokens": max_tokens, "ignore_eos": True, "temperature": 0}}
        with httpx.Client(base_url=url, timeout=600) as c, c.stream("POST", "/generate", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    self.times[i].append(time.perf_counter())

    def max_gap(self, start: float, end: float) -> float:
        gaps = [b - a for ts in self.times for a, b in zip(ts, ts[1:]) if start <= b <= end]
        return max(gaps) if gaps else float("nan")

    def median_gap(self, start: float, end: float) -> float:
        gaps = [b - a for ts in self.times for a, b in zip(ts, ts[1:]) if start <= b <= end]
        return statistics.median(gaps) if gaps else float("nan")

    def join(self) -> None:
        for t in self.threads:
            t.join()


def _ttft(url: str, schema: dict[str, Any] | None) -> float:
    sp: dict[str, Any] = {"max_new_tokens": 4, "temperature": 0}
    if schema is not None:
        sp["json_schema"] = json.dumps(schema)
    t = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c, c.stream("POST", "/generate", json={
            "text": _prompt(0), "stream": True, "sampling_params": sp}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - t
    return float("nan")


def new_schema(url: str, batch: int, max_tokens: int) -> dict[str, Any]:
    streams = _Streams(url, batch, max_tokens)
    time.sleep(3.0)  # every stream is decoding
    out: dict[str, Any] = {"streams": batch}
    for kind in ("unconstrained", "new_schema"):
        before = time.perf_counter()
        time.sleep(1.0)
        start = time.perf_counter()
        fresh = None
        if kind == "new_schema":  # a property name the server has never seen: nothing cached
            fresh = json.loads(json.dumps(SCHEMA).replace('"title"', f'"title_{uuid.uuid4().hex[:8]}"'))
        ttft = _ttft(url, fresh)
        end = time.perf_counter()
        out[kind] = {"ttft_s": ttft, "streams_gap_p50_before_s": streams.median_gap(before, start),
                     "streams_max_gap_during_s": streams.max_gap(start, end)}
    streams.join()
    out["ttft_ratio_new_schema_over_unconstrained"] = out["new_schema"]["ttft_s"] / out["unconstrained"]["ttft_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one with the bundled model)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.max_tokens < 1:
        ap.error("--batch, --rounds and --max-tokens must be at least 1")
    result = against_server(args.url, lambda url: {
        "throughput": throughput(url, args.batch, args.rounds, args.max_tokens),
        "new_schema": new_schema(url, args.batch, 4 * args.max_tokens)})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
