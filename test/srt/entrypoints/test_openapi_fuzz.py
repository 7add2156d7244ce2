"""Property-based fuzz of the HTTP API from its own /openapi.json (schemathesis + hypothesis).

A real server (bundled SmolLM2 on CPU, capture on, 8 running requests at most) gets
requests generated for every operation of its schema, in three passes:

* ``tight``: schema-valid bodies of a copy of the schema with the value rules the server
  checks after parsing written in (``tighten``), so they reach tokenization, the
  scheduler, capture and the response builders (most answer 200);
* ``positive``: schema-valid bodies of the published schema (right types, any values:
  out-of-range numbers, unknown token ids, empty prompts, ...);
* ``negative``: bodies that violate the published schema (wrong types, missing fields,
  not JSON).

Whatever the input, the server must answer within the per-request timeout and never with
a 5xx; afterwards it must still serve a normal request, /health must be 200 and no
request may be left running.

Generation stays cheap: ``max_tokens`` / ``max_completion_tokens`` / ``max_new_tokens``
between 5 and 2**20 are lowered to 4 and set to 4 where absent (larger values must be
refused with 400 by validation, so they are sent as generated).

Bounded and reproducible: a fixed seed and a fixed number of examples per operation and
pass. ``SGLANG_FUZZ_SEED`` and ``SGLANG_FUZZ_SCALE`` (a multiplier of the examples) widen
a local run. Every 5xx or timeout is collected (no shrinking) and reported with the
request body and the response.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Iterator

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from e2e_server import RunningServer, start_server  # noqa: E402

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("SGLANG_FUZZ_SEED", "20251203"))
SCALE = float(os.environ.get("SGLANG_FUZZ_SCALE", "1"))
REQUEST_TIMEOUT = 30.0
MAX_STREAM_EVENTS = 10_000
MAX_GEN = 4
GENERATION_OPS = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/generate"),
                  ("PUT", "/generate")}
# examples per operation and pass: tight, positive, negative
N_GENERATION = {"tight": 40, "positive": 30, "negative": 25}
N_BODY = {"tight": 10, "positive": 10, "negative": 15}  # /abort_request
N_OTHER = {"tight": 4, "positive": 4, "negative": 4}  # GET probes and info, /flush_cache


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RunningServer]:
    srv = start_server(["--return-attention-tokens", "--max-running-requests", "8", "--served-model-name", "smol"])
    yield srv
    if srv.proc.poll() is None:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()


def _cap(d: dict[str, Any], key: str, default: bool) -> None:
    v = d.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and MAX_GEN < v <= 1 << 20:
        d[key] = MAX_GEN
    elif default and (key not in d or v is None):
        d[key] = MAX_GEN


def whole_floats_to_int(x: Any) -> Any:
    """JSON Schema (2020-12, OpenAPI 3.1) counts 2.0 as an integer, the strict parser does
    not (400): positive examples spell integers as integers."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    if isinstance(x, list):
        return [whole_floats_to_int(v) for v in x]
    if isinstance(x, dict):
        return {k: whole_floats_to_int(v) for k, v in x.items()}
    return x


def bound_generation(path: str, body: Any) -> Any:
    """Keep every generated request fast (see the module docstring)."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if path == "/v1/chat/completions":
        _cap(body, "max_completion_tokens", default=False)
        _cap(body, "max_tokens", default=not isinstance(body.get("max_completion_tokens"), int))
    elif path == "/v1/completions":
        _cap(body, "max_tokens", default=True)
    elif path == "/generate":
        sp = body.get("sampling_params")
        if sp is None:
            body["sampling_params"] = {"max_new_tokens": MAX_GEN}
        elif isinstance(sp, dict):
            sp = dict(sp)
            _cap(sp, "max_new_tokens", default=True)
            body["sampling_params"] = sp
    return body


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _int(lo: int, hi: int | None = None) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, **({"maximum": hi} if hi is not None else {})}


def _num(lo: float, hi: float, exclusive_lo: bool = False) -> dict[str, Any]:
    return {"type": "number", ("exclusiveMinimum" if exclusive_lo else "minimum"): lo, "maximum": hi,
            "allowNaN": False}


def tighten(raw: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A copy of the published schema with the value rules the server checks after parsing
    (ranges, non-empty prompts, one of text/input_ids, the model's layers, heads and
    vocabulary) written in, so schema-valid examples get past validation and reach the
    engine. The published schema itself (types and required fields only) drives the
    negative examples."""
    raw = json.loads(json.dumps(raw))
    comps = raw["components"]["schemas"]
    vocab, layers, heads = info["vocab_size"], info["num_layers"], info["num_attention_heads"]
    ids = {"type": "array", "items": _int(0, vocab - 1), "minItems": 1, "maxItems": 64}
    text = {"type": "string", "minLength": 1, "maxLength": 200}
    stop = {"anyOf": [text, {"type": "array", "items": text, "maxItems": 4}]}
    sampling = {
        "temperature": _num(0, 2), "top_p": _num(0, 1, exclusive_lo=True),
        "top_k": {"anyOf": [{"const": -1}, _int(1, 100)]}, "min_p": _num(0, 1),
        "repetition_penalty": _num(0, 2, exclusive_lo=True), "frequency_penalty": _num(-2, 2),
        "presence_penalty": _num(-2, 2), "stop": stop, "stop_token_ids": {"type": "array", "items": _int(0, vocab - 1)},
        "seed": _int(0), "n": {"const": 1},
    }
    capture = {
        "top_k_attention": _int(1, 64),
        "attention_capture_layers": {"anyOf": [{"enum": ["last", "auto"]},
                                               {"type": "array", "items": _int(0, layers - 1), "minItems": 1,
                                                "maxItems": 4}]},
        "attention_capture_head_ids": {"type": "array", "items": _int(0, heads - 1), "minItems": 1},
        "attention_mask_prefix": _int(0), "attention_adaptive_sampling": {"const": False},
    }
    model = {"enum": [info["served_model_name"], "default"]}

    def put(name: str, props: dict[str, Any], nullable: bool = True) -> None:
        """Replace properties (None: drop the field); null stays allowed where the model allows it."""
        target = comps[name]["properties"]
        for k, v in props.items():
            if k not in target:
                continue
            if v is None:
                del target[k]
                continue
            was_nullable = {"type": "null"} in target[k].get("anyOf", ())
            target[k] = _nullable(v) if nullable and was_nullable else v

    for name in ("ChatCompletionRequest", "CompletionRequest"):
        put(name, {**sampling, **capture, "max_tokens": _int(0, MAX_GEN), "logit_bias": None})
        comps[name]["properties"]["model"] = model
    put("ChatCompletionRequest", {"max_completion_tokens": _int(0, MAX_GEN), "top_logprobs": _int(0, 20),
                                  "tools": None, "response_format": None, "tool_choice": None})
    put("CompletionRequest", {"logprobs": _int(0, 20), "best_of": {"const": 1}, "suffix": None,
                              "prompt": {"anyOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 4},
                                                   ids, {"type": "array", "items": ids, "minItems": 1,
                                                         "maxItems": 4}]}}, nullable=False)
    gen = comps["GenerateRequest"]
    put("GenerateRequest", {**capture, "top_logprobs_num": _int(0, 20)})
    put("GenerateRequest", {"text": {"anyOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 4}]},
                            "input_ids": {"anyOf": [ids, {"type": "array", "items": ids, "minItems": 1,
                                                          "maxItems": 4}]}}, nullable=False)
    gen["oneOf"] = [{"required": ["text"]}, {"required": ["input_ids"]}]
    sp = comps["SamplingParams"]
    sp["additionalProperties"] = False
    sp["properties"].update({**sampling, "max_new_tokens": _int(0, MAX_GEN)})
    sp["properties"]["seed"] = _nullable(_int(0))
    return raw


def passes(method: str, path: str, has_input: bool) -> list[tuple[str, int]]:
    n = N_GENERATION if (method, path) in GENERATION_OPS else N_BODY if path == "/abort_request" else N_OTHER
    names = ["tight", "positive", "negative"] if has_input else ["positive"]
    return [(name, max(1, int(n[name] * SCALE))) for name in names]


def shown(x: Any, limit: int = 2000) -> str:
    try:
        s = json.dumps(x, ensure_ascii=True)
    except (TypeError, ValueError):
        s = repr(x)
    return s if len(s) <= limit else s[:limit] + "..."


def stream_problem(resp: Any) -> str | None:
    """A 200 stream must end with ``data: [DONE]`` and carry no 5xx error event."""
    if resp.status_code != 200 or not (resp.headers.get("content-type") or [""])[0].startswith("text/event-stream"):
        return None
    if resp.stream_cut_short:
        return f"stream not finished within {REQUEST_TIMEOUT:g} s or {MAX_STREAM_EVENTS} events"
    events = [e for e in resp.text.split("\n\n") if e.strip()]
    if not events or events[-1] != "data: [DONE]":
        return "stream does not end with data: [DONE]"
    for e in events[:-1]:
        try:
            err = json.loads(e[len("data: "):]).get("error")
        except (ValueError, AttributeError):
            return f"malformed event {e[:200]!r}"
        if isinstance(err, dict) and isinstance(err.get("code"), int) and err["code"] >= 500:
            return f"error event {err}"
    return None


def fuzz_operation(op: Any, pass_name: str, n: int, url: str, statuses: dict[str, dict[int, int]],
                   failures: list[str]) -> None:
    """Send ``n`` generated requests of one operation; record every 5xx or missing answer."""
    label = f"{op.method.upper()} {op.path} [{pass_name}]"
    statuses.setdefault(label, {})
    mode = GenerationMode.NEGATIVE if pass_name == "negative" else GenerationMode.POSITIVE

    @seed(SEED)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if pass_name == "tight":
            case.body = whole_floats_to_int(case.body)
        case.body = bound_generation(case.path, case.body)
        t = time.monotonic()
        try:
            resp = case.call(base_url=url, timeout=REQUEST_TIMEOUT)
        except Exception as e:  # a hang (timeout) or a dropped connection
            failures.append(f"{label} {case.formatted_path}: {type(e).__name__}: {e} after "
                            f"{time.monotonic() - t:.1f} s\n  body: {shown(case.body)}\n"
                            f"  query: {shown(case.query)} headers: {shown(case.headers)}")
            return
        statuses[label][resp.status_code] = statuses[label].get(resp.status_code, 0) + 1
        problem = f"{resp.status_code}" if resp.status_code >= 500 else stream_problem(resp)
        if problem:
            failures.append(f"{label} {case.formatted_path}: {problem}\n  body: {shown(case.body)}\n"
                            f"  query: {shown(case.query)} headers: {shown(case.headers)}\n"
                            f"  response: {resp.text[:2000]}")

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # nothing schema-violating exists here (a path parameter: every string is valid)


def test_fuzz_api_from_openapi(fuzz_server: RunningServer) -> None:
    url = fuzz_server.url
    published = httpx.get(f"{url}/openapi.json", timeout=30).json()
    info = httpx.get(f"{url}/get_model_info", timeout=30).json()
    schemas = {"positive": schemathesis.openapi.from_dict(published),
               "tight": schemathesis.openapi.from_dict(tighten(published, info))}
    schemas["negative"] = schemas["positive"]
    for sch in schemas.values():
        sch.config.max_stream_events = MAX_STREAM_EVENTS  # read whole streams (schemathesis stops at 20 events)
    operations = [r.ok() for r in schemas["positive"].get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= GENERATION_OPS | {("POST", "/abort_request")}

    failures: list[str] = []
    statuses: dict[str, dict[int, int]] = {}  # label -> status -> count
    t_start = time.monotonic()
    for op in operations:
        method, path = op.method.upper(), op.path
        has_input = bool(op.body and len(op.body)) or bool(op.path_parameters) or bool(op.query)
        for pass_name, n in passes(method, path, has_input):
            fuzz_operation(schemas[pass_name][path][method], pass_name, n, url, statuses, failures)
    took = time.monotonic() - t_start
    total = sum(sum(v.values()) for v in statuses.values())
    print(f"\nfuzz: {total} requests in {took:.0f} s (seed {SEED})")
    for label, by_status in statuses.items():
        print(f"  {label}: " + (", ".join(f"{k} x{v}" for k, v in sorted(by_status.items())) or "none generated"))
    assert not failures, f"{len(failures)} request(s) got a 5xx or no answer:\n\n" + "\n\n".join(failures[:20])
    tight_ok = sum(statuses.get(f"{m} {p} [tight]", {}).get(200, 0) for m, p in GENERATION_OPS)
    assert tight_ok >= 0.5 * sum(N_GENERATION["tight"] * SCALE for _ in GENERATION_OPS), \
        "most tight examples should reach generation (200)"

    # The server is still healthy, serves a normal request and left nothing running.
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
        deadline = time.time() + 30
        while True:
            load = c.get("/get_server_info").json()["load"]
            if load["num_running"] == 0 and load["num_waiting"] == 0:
                break
            assert time.time() < deadline, f"requests left running after the fuzz: {load}"
            time.sleep(0.2)
    assert fuzz_server.proc.poll() is None
