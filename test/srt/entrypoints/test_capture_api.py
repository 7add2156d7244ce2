"""Capture request fields -> CaptureParams, guardrails and capabilities (no engine needed)."""
from __future__ import annotations

import pytest

from sglang.srt.entrypoints.capture_api import (
    CaptureGuard,
    CapturePlacer,
    build_capture_params,
    capabilities,
    resolve_layers,
)
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import CaptureFields
from sglang.srt.server_args import ServerArgs

INFO = {"num_layers": 30, "num_attention_heads": 9, "is_moe": False}


def args(**kw) -> ServerArgs:
    a = ServerArgs(**kw)
    a.validate()
    return a


def fields(**kw) -> CaptureFields:
    return CaptureFields(**kw)


def test_layers_last_auto_lists() -> None:
    assert resolve_layers("last", 30, "x") == [29]
    assert resolve_layers("auto", 30, "x") == [7, 15, 22, 29]
    assert resolve_layers("auto", 2, "x") == [0, 1]  # unique and sorted on tiny models
    assert resolve_layers("5, 3,5", 30, "x") == [3, 5]
    assert resolve_layers([0, 29], 30, "x") == [0, 29]
    for bad in ("first", [30], [-1], "1,x", []):
        with pytest.raises(APIError) as e:
            resolve_layers(bad, 30, "attention_capture_layers")
        assert e.value.status == 400 and e.value.param == "attention_capture_layers"


def test_no_capture_without_request_or_default() -> None:
    assert build_capture_params(fields(), args(return_attention_tokens=True), INFO) is None
    assert build_capture_params(fields(return_attention_tokens=False), args(return_attention_tokens=True), INFO) is None


def test_capture_disabled_on_server_is_400() -> None:
    with pytest.raises(APIError) as e:
        build_capture_params(fields(return_attention_tokens=True), args(), INFO)
    assert e.value.status == 400 and "disabled" in e.value.message and e.value.param == "return_attention_tokens"


def test_defaults_from_server_flags() -> None:
    a = args(return_attention_tokens=True, attention_tokens_top_k=7, attention_capture_layers="auto",
             attention_tokens_stride=2, attention_tokens_window=64, attention_tokens_max=100, attention_chunk_size=256)
    p = build_capture_params(fields(return_attention_tokens=True), a, INFO)
    assert p is not None
    assert (p.mode, p.top_k, p.layers, p.stride, p.window, p.max_steps, p.chunk_size) == (
        "raw", 7, [7, 15, 22, 29], 2, 64, 100, 256)
    assert p.head_ids is None and p.mask_prefix == 0 and not p.include_prompt_attention


def test_request_fields_override() -> None:
    a = args(return_attention_tokens=True, attention_fingerprint_max_steps=32)
    p = build_capture_params(fields(return_attention_tokens=True, top_k_attention=64, attention_capture_layers=[0, 3],
                                    attention_capture_head_ids=[8, 0, 0], attention_mask_prefix=4,
                                    include_prompt_attention=True, attention_fingerprint_mode=True), a, INFO)
    assert p is not None
    assert (p.mode, p.top_k, p.layers, p.head_ids, p.mask_prefix, p.include_prompt_attention, p.max_steps) == (
        "fingerprint", 64, [0, 3], [0, 8], 4, True, 32)


def test_mode_resolution() -> None:
    on = {"return_attention_tokens": True}
    assert build_capture_params(fields(**on, attention_sketch_mode=True), args(return_attention_tokens=True), INFO).mode == "sketch"
    fp_server = args(return_attention_tokens=True, attention_fingerprint_mode=True)
    assert build_capture_params(fields(**on), fp_server, INFO).mode == "fingerprint"
    assert build_capture_params(fields(**on, attention_fingerprint_mode=False), fp_server, INFO).mode == "raw"
    both = fields(**on, attention_sketch_mode=True, attention_fingerprint_mode=True)
    assert build_capture_params(both, args(return_attention_tokens=True), INFO).mode == "fingerprint"
    # --attention-capture-default: every request captures in that mode with no field at all.
    p = build_capture_params(fields(), args(attention_capture_default="sketch"), INFO)
    assert p is not None and p.mode == "sketch"


@pytest.mark.parametrize("kw,param", [
    ({"top_k_attention": 0}, "top_k_attention"),
    ({"top_k_attention": 65}, "top_k_attention"),
    ({"attention_capture_head_ids": [9]}, "attention_capture_head_ids"),
    ({"attention_capture_head_ids": []}, "attention_capture_head_ids"),
    ({"attention_mask_prefix": -1}, "attention_mask_prefix"),
    ({"attention_capture_layers": "0,99"}, "attention_capture_layers"),
    ({"return_logit_lens": True, "logit_lens_layers": [30]}, "logit_lens_layers"),
    ({"return_logit_lens": True, "logit_lens_top_k": 21}, "logit_lens_top_k"),
    ({"logit_lens_layers": "auto"}, "logit_lens_layers"),
    ({"attention_capture_heads": [9]}, "attention_capture_heads"),
    ({"attention_capture_heads": []}, "attention_capture_heads"),
    ({"attention_capture_heads": "each", "attention_capture_head_ids": [1]}, "attention_capture_heads"),
    ({"attention_capture_heads": "each", "attention_fingerprint_mode": True}, "attention_capture_heads"),
])
def test_invalid_fields_name_the_field(kw: dict, param: str) -> None:
    with pytest.raises(APIError) as e:
        build_capture_params(fields(return_attention_tokens=True, **kw), args(return_attention_tokens=True), INFO)
    assert e.value.status == 400 and e.value.param == param and param in e.value.message


def test_disable_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    a = args(return_attention_tokens=True, attention_disable_in_production=True)
    monkeypatch.delenv("SGLANG_ATTENTION_DEBUG", raising=False)
    with pytest.raises(APIError) as e:
        build_capture_params(fields(return_attention_tokens=True), a, INFO)
    assert "production" in e.value.message
    caps = capabilities(a, INFO, None)
    assert caps["supported"] is False and caps["guardrails"]["disabled_in_production"] is True
    monkeypatch.setenv("SGLANG_ATTENTION_DEBUG", "1")
    assert build_capture_params(fields(return_attention_tokens=True), a, INFO) is not None
    assert capabilities(a, INFO, None)["supported"] is True


def test_guard_key_and_concurrency() -> None:
    g = CaptureGuard(api_key="s3cret", max_concurrent=1)
    with pytest.raises(APIError) as e:
        g.check_key({})
    assert e.value.status == 401
    with pytest.raises(APIError):
        g.check_key({"x-attention-api-key": "wrong"})
    g.check_key({"x-attention-api-key": "s3cret"})
    g.check_key({"authorization": "Bearer s3cret"})
    a = g.acquire()
    with pytest.raises(APIError) as e:
        g.acquire()
    assert e.value.status == 429
    a.release()
    a.release()  # idempotent: a double release never frees a slot twice
    assert g.active == 0
    g.acquire()
    assert g.active == 1


def test_guard_slots_are_their_own_keys() -> None:
    """Two requests with the same rid hold two slots; releasing one leaves the other held
    (keyed by rid, the duplicate's release freed the first one's slot, and a later release
    of the first then leaked it: the cap admitted one fewer request forever)."""
    g = CaptureGuard(api_key=None, max_concurrent=2)
    first, dup = g.acquire(), g.acquire()
    dup.release()  # the duplicate is refused and lets go of its own slot only
    assert g.active == 1
    g.acquire().release()  # one slot is free, and only one
    first.release()
    assert g.active == 0
    g.acquire(), g.acquire()
    assert g.active == 2


def test_capabilities_body() -> None:
    a = args(return_attention_tokens=True, attention_api_key="k", attention_max_concurrent_capture=3,
             attention_mask_system_prompt=True, attention_sidecar_url="tcp://127.0.0.1:9001")
    c = capabilities(a, {**INFO, "is_moe": True}, "qwen3")
    assert c["supported"] and c["modes"] == ["raw", "sketch", "fingerprint"]
    assert c["max_top_k"] == 64 and c["max_layers"] == 30 and c["layers_default"] == [29]
    assert c["features"] == {"include_prompt_attention": True, "head_filtering": True, "moe_routing": True,
                             "think_segmentation": True, "logit_lens": True, "sidecar": True}
    assert c["guardrails"] == {"max_concurrent_capture": 3, "requires_api_key": True, "system_prompt_masked": True,
                               "disabled_in_production": False}
    assert c["limits"]["max_steps"] == 4096


def test_placer_tags_entries_by_decode_step() -> None:
    placer = CapturePlacer(tagging=True)
    first = {"new_token_ids": [5, 6], "token_texts": ["a", "b"],
             "meta_info": {"attention_tokens": [{"decode_step": 0, "layer_id": 1}, {"decode_step": 1, "layer_id": 1}],
                           "attention_prompt_tokens": [{"position": 0, "id": 1, "text": "x", "masked": False}]}}
    f = placer.chunk(first, ["think", "output"])
    assert [e["think_phase"] for e in f["attention_tokens"]] == ["think", "output"]
    assert f["attention_output_tokens"] == [{"step": 0, "id": 5, "text": "a", "think_phase": "think"},
                                            {"step": 1, "id": 6, "text": "b", "think_phase": "output"}]
    assert f["attention_prompt_tokens"][0]["position"] == 0
    second = {"new_token_ids": [7], "token_texts": ["c"], "meta_info": {"attention_tokens": [{"decode_step": 2}]}}
    g = placer.chunk(second, ["output"])
    assert "attention_prompt_tokens" not in g
    assert g["attention_output_tokens"][0]["step"] == 2 and g["attention_tokens"][0]["think_phase"] == "output"
    untagged = CapturePlacer(tagging=False).chunk(first, None)
    assert all("think_phase" not in e for e in untagged["attention_tokens"])


def test_adaptive_sampling_field_and_server_default() -> None:
    on = {"return_attention_tokens": True, "attention_fingerprint_mode": True}
    assert build_capture_params(fields(**on), args(return_attention_tokens=True), INFO).adaptive_sampling is False
    srv = args(return_attention_tokens=True, attention_adaptive_sampling=True)
    assert build_capture_params(fields(**on), srv, INFO).adaptive_sampling is True
    assert build_capture_params(fields(**on, attention_adaptive_sampling=False), srv, INFO).adaptive_sampling is False


def test_logit_lens_fields() -> None:
    p = build_capture_params(fields(return_logit_lens=True), args(return_attention_tokens=True), INFO)
    assert p is not None and p.logit_lens_layers == [7, 15, 22, 29] and p.logit_lens_top_k == 5
    p = build_capture_params(fields(return_logit_lens=True, logit_lens_layers="last", logit_lens_top_k=3),
                             args(return_attention_tokens=True), INFO)
    assert p.logit_lens_layers == [29] and p.logit_lens_top_k == 3
    assert build_capture_params(fields(return_attention_tokens=True), args(return_attention_tokens=True),
                                INFO).logit_lens_layers == []
    with pytest.raises(APIError) as e:  # the lens is capture: the server must allow it
        build_capture_params(fields(return_logit_lens=True), args(), INFO)
    assert e.value.param == "return_attention_tokens"


def test_per_head_field() -> None:
    a = args(return_attention_tokens=True)
    p = build_capture_params(fields(return_attention_tokens=True, attention_capture_heads="each"), a, INFO)
    assert p.heads_each == list(range(9)) and p.head_ids is None
    p = build_capture_params(fields(return_attention_tokens=True, attention_capture_heads=[5, 1, 5]), a, INFO)
    assert p.heads_each == [1, 5]


def test_fingerprint_version_field_and_flag() -> None:
    """Version 2 by default, 1 on request or from --attention-fingerprint-version; any other
    value is a 400 naming the field (a typo never silently picks a definition)."""
    on = args(return_attention_tokens=True)
    assert build_capture_params(fields(return_attention_tokens=True), on, INFO).fingerprint_version == 2
    p = build_capture_params(fields(return_attention_tokens=True, attention_fingerprint_version=1), on, INFO)
    assert p.fingerprint_version == 1
    v1 = args(return_attention_tokens=True, attention_fingerprint_version=1)
    assert build_capture_params(fields(return_attention_tokens=True), v1, INFO).fingerprint_version == 1
    for bad in (0, 3, -1):
        with pytest.raises(APIError) as e:
            build_capture_params(fields(return_attention_tokens=True, attention_fingerprint_version=bad), on, INFO)
        assert e.value.status == 400 and e.value.param == "attention_fingerprint_version"
    with pytest.raises(ValueError, match="attention-fingerprint-version"):
        args(attention_fingerprint_version=3)
    assert capabilities(v1, INFO, None)["fingerprint"] == {"versions": [1, 2], "default_version": 1, "sink_tokens": 1}
