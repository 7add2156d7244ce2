"""/server_info and /model_info bodies have the JSON types sglang-router 0.3.2 deserializes.

The router parses these strictly (one wrongly typed field drops the whole probe), so
each field it reads must be absent, null or of its type. The end-to-end check, the
router registering real replicas with this metadata, is in test_router_replicas.py.
"""
from __future__ import annotations

import json

from sglang.srt.entrypoints.server_info import model_info_body, server_info_body
from sglang.srt.server_args import ServerArgs

INFO = {"model_path": "/m/SmolLM2.gguf", "architecture": "LlamaForCausalLM", "num_layers": 30,
        "max_total_tokens": 4096, "max_running_requests": 64, "context_length": 8192}
STR, UINT, BOOL = "str", "uint", "bool"
SERVER_FIELDS = {"model_path": STR, "served_model_name": STR, "version": STR, "dp_size": UINT,
                 "max_total_tokens": UINT, "max_prefill_tokens": UINT, "max_running_requests": UINT,
                 "max_batch_size": UINT, "max_num_reqs": UINT}
MODEL_FIELDS = {"model_path": STR, "tokenizer_path": STR, "model_type": STR, "is_generation": BOOL}


def _ok(v: object, kind: str) -> bool:
    if v is None:
        return True
    if kind == STR:
        return isinstance(v, str)
    if kind == BOOL:
        return isinstance(v, bool)
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def test_server_info_types() -> None:
    for args in (ServerArgs(), ServerArgs(served_model_name="smol", max_total_tokens=2048, api_key="secret")):
        body = json.loads(json.dumps(server_info_body(args, INFO, args.served_model_name or "SmolLM2", {}, 0.0, 0)))
        for k, kind in SERVER_FIELDS.items():
            assert _ok(body.get(k), kind), (k, body.get(k))
        assert "model" not in body and "model_id" not in body  # both at once is a router parse error
        assert body["dp_size"] == 1 and body["model_path"] == "/m/SmolLM2.gguf"
        assert body["max_total_tokens"] == 4096  # the engine's real size, not the (optional) flag
        assert body["api_key"] in (None, "***")


def test_model_info_types() -> None:
    body = json.loads(json.dumps(model_info_body(ServerArgs(), INFO, "smol")))
    for k, kind in MODEL_FIELDS.items():
        assert _ok(body.get(k), kind), (k, body.get(k))
    assert body["architectures"] == ["LlamaForCausalLM"] and body["is_generation"] is True
    assert body["served_model_name"] == "smol" and body["num_layers"] == 30
