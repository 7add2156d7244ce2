"""Bodies of the info endpoints: /model_info (/get_model_info) and /server_info (/get_server_info).

``sglang-router`` (0.3.2) probes each worker at registration with ``GET /server_info`` and
``GET /model_info`` (falling back to the ``/get_`` names on 404) and deserializes them
strictly: a field it knows with the wrong JSON type fails the whole probe. The fields it
reads, with the types it expects:

* /server_info: ``model_path``, ``served_model_name``, ``model_id`` (alias ``model``),
  ``version`` (strings), ``dp_size``, ``max_total_tokens``, ``max_prefill_tokens``,
  ``max_running_requests``, ``max_batch_size``, ``max_num_reqs`` (unsigned integers).
* /model_info: ``model_path``, ``tokenizer_path``, ``model_type`` (strings),
  ``is_generation`` (bool), ``architectures`` (list of strings).

Every one of them is either absent, null or of that type here (``model`` and ``model_id``
are deliberately never sent: both at once is a duplicate-field error for the router).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import sglang
from sglang.srt.server_args import ServerArgs

_SECRETS = ("api_key", "attention_api_key")
_NOT_SENT = ("model", "model_id")  # see the module docstring


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def model_info_body(args: ServerArgs, info: Mapping[str, Any], served_name: str) -> dict[str, Any]:
    body = dict(info)
    model_path = str(info.get("model_path") or args.model_path or served_name)
    arch = info.get("architecture")
    body.update({
        "model_path": model_path,
        "tokenizer_path": args.tokenizer_path or model_path,
        "served_model_name": served_name,
        "is_generation": True,
        "architectures": [str(arch)] if arch else [],
        "reasoning_parser": args.reasoning_parser,
    })
    mt = info.get("model_type")
    body["model_type"] = str(mt) if mt else None
    for k in _NOT_SENT:
        body.pop(k, None)
    return body


def server_info_body(args: ServerArgs, info: Mapping[str, Any], served_name: str, load: Mapping[str, Any],
                     started_at: float, capture_active: int) -> dict[str, Any]:
    d = dataclasses.asdict(args)
    for secret in _SECRETS:
        if d.get(secret):
            d[secret] = "***"
    # the resolved values, not the flags (None means "bundled model" / "sized from memory")
    d["model_path"] = str(info.get("model_path") or args.model_path or served_name)
    d["served_model_name"] = served_name
    d["max_total_tokens"] = _int_or_none(info.get("max_total_tokens")) or _int_or_none(args.max_total_tokens)
    d["max_total_num_tokens"] = d["max_total_tokens"]  # upstream's name for the KV pool size in tokens
    d["max_running_requests"] = _int_or_none(info.get("max_running_requests")) or args.max_running_requests
    d["max_prefill_tokens"] = _int_or_none(args.chunked_prefill_size)
    d["dp_size"] = 1  # one scheduler per server; replicas are scaled by the router
    for k in _NOT_SENT:
        d.pop(k, None)
    return {**d, "version": sglang.__version__, "load": dict(load), "model_info": dict(info),
            "uptime_s": time.time() - started_at, "capture_active": capture_active}
