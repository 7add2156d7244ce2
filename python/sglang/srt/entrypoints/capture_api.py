"""HTTP side of attention capture: request fields -> CaptureParams, guardrails, capabilities.

The engine implements the capture math; this module decides, per request, whether and
how to capture (validated against the server's limits), enforces the multi-tenant
guardrails (API key, concurrency cap, production switch), and places the engine's
entries on the response (tagging each with its think/output phase).
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Mapping

from sgl_kernel.zones import FINGERPRINT_VERSIONS
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import CaptureFields
from sglang.srt.limits import (
    MAX_LOGIT_LENS_TOP_K,
    MAX_REPLAY_ELEMENTS,
    MAX_REPLAY_TOKENS,
    MAX_SINK_TOKENS,
    MAX_TOP_K_ATTENTION,
)
from sglang.srt.managers.io_struct import CaptureParams, auto_layers
from sglang.srt.server_args import ServerArgs

MODES = ["raw", "sketch", "fingerprint"]
DEBUG_ENV = "SGLANG_ATTENTION_DEBUG"


def capture_allowed(args: ServerArgs) -> bool:
    """Capture is on when a flag enables it and the production switch does not forbid it."""
    if args.attention_disable_in_production and os.environ.get(DEBUG_ENV) != "1":
        return False
    return args.capture_enabled


def resolve_layers(spec: str | list[int], num_layers: int, param: str) -> list[int]:
    """"last" | "auto" | "0,3,5" | [0, 3, 5] -> sorted unique layer ids, each < num_layers."""
    L = num_layers
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "last":
            return [L - 1]
        if s == "auto":
            return auto_layers(L)
        try:
            ids = [int(p) for p in s.split(",") if p.strip() != ""]
        except ValueError:
            raise APIError(400, f"{param}: expected 'last', 'auto', or a comma list of layer ids, got {spec!r}",
                           param) from None
    else:
        ids = list(spec)
    if not ids:
        raise APIError(400, f"{param}: at least one layer id is required", param)
    bad = [i for i in ids if not 0 <= i < L]
    if bad:
        raise APIError(400, f"{param}: layer id {bad[0]} out of range; the model has {L} layers (0..{L - 1})", param)
    return sorted(set(ids))


def capture_mode(args: ServerArgs, req: CaptureFields | None = None) -> str:
    """The one place the capture mode is decided: each request flag overrides the
    matching server flag (--attention-*-mode or --attention-capture-default); fingerprint
    beats sketch. Without a request: the server's default mode."""
    fp = args.attention_fingerprint_mode or args.attention_capture_default == "fingerprint"
    sk = args.attention_sketch_mode or args.attention_capture_default == "sketch"
    if req is not None:
        fp = req.attention_fingerprint_mode if req.attention_fingerprint_mode is not None else fp
        sk = req.attention_sketch_mode if req.attention_sketch_mode is not None else sk
    return "fingerprint" if fp else "sketch" if sk else "raw"


def wants_capture(req: CaptureFields, args: ServerArgs) -> bool:
    """Explicit request (return_attention_tokens or return_logit_lens: true), or the
    server's default mode."""
    if req.return_logit_lens:
        return True
    if req.return_attention_tokens is not None:
        return req.return_attention_tokens
    return args.attention_capture_default != "off"


def build_capture_params(req: CaptureFields, args: ServerArgs, model_info: Mapping[str, Any]) -> CaptureParams | None:
    """Validate the request's capture fields; None when the request does not capture.

    Invalid values are rejected even when the request does not capture, so that a typo
    never goes unnoticed.
    """
    num_layers = int(model_info["num_layers"])
    num_heads = int(model_info["num_attention_heads"])
    if req.top_k_attention is not None and not 1 <= req.top_k_attention <= MAX_TOP_K_ATTENTION:
        raise APIError(400, f"top_k_attention: must be between 1 and {MAX_TOP_K_ATTENTION}, got {req.top_k_attention}",
                       "top_k_attention")
    layers = resolve_layers(req.attention_capture_layers if req.attention_capture_layers is not None
                            else args.attention_capture_layers, num_layers,
                            "attention_capture_layers" if req.attention_capture_layers is not None
                            else "--attention-capture-layers")
    heads = req.attention_capture_head_ids
    if heads is not None:
        if not heads:
            raise APIError(400, "attention_capture_head_ids: give at least one head id (omit the field for all heads)",
                           "attention_capture_head_ids")
        bad = [h for h in heads if not 0 <= h < num_heads]
        if bad:
            raise APIError(400, f"attention_capture_head_ids: head id {bad[0]} out of range; the model has "
                           f"{num_heads} query heads (0..{num_heads - 1})", "attention_capture_head_ids")
        heads = sorted(set(heads))
    each = req.attention_capture_heads
    if each is not None:
        if heads is not None:
            raise APIError(400, "attention_capture_heads: give either attention_capture_heads (one entry per head) or "
                           "attention_capture_head_ids (their mean), not both", "attention_capture_heads")
        each = list(range(num_heads)) if each == "each" else sorted(set(each))
        if not each or any(not 0 <= h < num_heads for h in each):
            raise APIError(400, f"attention_capture_heads: \"each\" or a non-empty list of head ids in "
                           f"0..{num_heads - 1}", "attention_capture_heads")
    sink = req.attention_sink_tokens if req.attention_sink_tokens is not None else args.attention_sink_tokens
    if not 0 <= sink <= MAX_SINK_TOKENS:
        raise APIError(400, f"attention_sink_tokens: must be in 0..{MAX_SINK_TOKENS}, got {sink}",
                       "attention_sink_tokens")
    version = (req.attention_fingerprint_version if req.attention_fingerprint_version is not None
               else args.attention_fingerprint_version)
    if version not in FINGERPRINT_VERSIONS:
        raise APIError(400, f"attention_fingerprint_version: must be one of {list(FINGERPRINT_VERSIONS)}, got {version}",
                       "attention_fingerprint_version")
    if req.attention_mask_prefix is not None and req.attention_mask_prefix < 0:
        raise APIError(400, f"attention_mask_prefix: must be >= 0, got {req.attention_mask_prefix}",
                       "attention_mask_prefix")
    lens_layers: list[int] = []
    if req.logit_lens_top_k is not None and not 1 <= req.logit_lens_top_k <= MAX_LOGIT_LENS_TOP_K:
        raise APIError(400, f"logit_lens_top_k: must be between 1 and {MAX_LOGIT_LENS_TOP_K}", "logit_lens_top_k")
    if req.return_logit_lens:
        lens_layers = resolve_layers(req.logit_lens_layers if req.logit_lens_layers is not None else "auto",
                                     num_layers, "logit_lens_layers")
    elif req.logit_lens_layers is not None or req.logit_lens_top_k is not None:
        raise APIError(400, "logit_lens_layers: set return_logit_lens: true to get the logit lens",
                       "logit_lens_layers" if req.logit_lens_layers is not None else "logit_lens_top_k")
    if not wants_capture(req, args):
        if req.attention_adaptive_sampling:
            raise APIError(400, "attention_adaptive_sampling: needs fingerprint capture; set return_attention_tokens "
                           "and attention_fingerprint_mode (or start the server with "
                           "--attention-capture-default fingerprint)", "attention_adaptive_sampling")
        return None
    if not capture_allowed(args):
        why = ("capture is disabled in production (set SGLANG_ATTENTION_DEBUG=1 to enable)"
               if args.attention_disable_in_production and args.capture_enabled
               else "attention capture is disabled on this server (start it with --return-attention-tokens)")
        raise APIError(400, f"return_attention_tokens: {why}", "return_attention_tokens")
    mode = capture_mode(args, req)
    if each is not None and mode != "raw":
        raise APIError(400, f"attention_capture_heads: per-head capture returns raw top-k entries; this request "
                       f"captures in {mode} mode", "attention_capture_heads")
    max_steps = args.attention_fingerprint_max_steps if mode == "fingerprint" else args.attention_tokens_max
    adaptive = resolve_adaptive(req, args, mode)
    return CaptureParams(
        mode=mode,  # type: ignore[arg-type]
        top_k=req.top_k_attention if req.top_k_attention is not None else args.attention_tokens_top_k,
        layers=layers,
        head_ids=heads,
        heads_each=each,
        sink_tokens=sink,
        fingerprint_version=version,
        mask_prefix=req.attention_mask_prefix or 0,
        include_prompt_attention=bool(req.include_prompt_attention),
        stride=args.attention_tokens_stride,
        window=args.attention_tokens_window,
        max_steps=max_steps,
        chunk_size=args.attention_chunk_size,
        adaptive_sampling=adaptive,
        logit_lens_layers=lens_layers,
        logit_lens_top_k=req.logit_lens_top_k or 5,
    )


def resolve_adaptive(req: CaptureFields, args: ServerArgs, mode: str) -> bool:
    """Adaptive sampling for a capturing request in ``mode``.

    An explicit ``true`` that cannot work is a 400 (the client asked for a behaviour it
    would silently not get); the server default only applies to fingerprint-mode
    requests, so a raw or sketch request on a server with --attention-adaptive-sampling
    still runs.
    """
    if req.attention_adaptive_sampling is None:
        return bool(args.attention_adaptive_sampling) and mode == "fingerprint"
    if not req.attention_adaptive_sampling:
        return False
    if mode != "fingerprint":
        raise APIError(400, f"attention_adaptive_sampling: needs fingerprint mode, but this request captures in "
                       f"{mode} mode; set attention_fingerprint_mode: true", "attention_adaptive_sampling")
    if not args.attention_hints_url:
        raise APIError(400, "attention_adaptive_sampling: this server has no manifold hints (start it with "
                       "--attention-hints-url pointing at a sidecar)", "attention_adaptive_sampling")
    return True


def mask_system_prompt(req: CaptureFields, args: ServerArgs) -> bool:
    """The server flag always wins (privacy); a request may only add masking."""
    return bool(args.attention_mask_system_prompt or req.attention_mask_system_prompt)


def explicit_capture(req: CaptureFields) -> bool:
    """The request itself asks for capture (what the API-key guardrail looks at).

    Adaptive sampling runs on captured fingerprints, so asking for it is asking for capture."""
    return bool(req.return_attention_tokens or req.attention_adaptive_sampling or req.return_logit_lens)


class CaptureSlot:
    """One request's hold on a capture slot. Releasing it twice is harmless, and it is
    its own key: two requests that share a ``rid`` never release each other's slot."""

    def __init__(self, guard: "CaptureGuard") -> None:
        self._guard: CaptureGuard | None = guard

    def release(self) -> None:
        if self._guard is not None:
            self._guard.active -= 1
            self._guard = None

    def shares(self, n: int) -> list["SlotShare"]:
        """n handles of this one slot, for the parallel samples of one request: the slot is
        let go when every handle is (or when the slot itself is released)."""
        left = [n]
        return [SlotShare(self, left) for _ in range(n)]


class SlotShare:
    """One parallel sample's hold on its request's capture slot (see CaptureSlot.shares)."""

    def __init__(self, slot: CaptureSlot, left: list[int]) -> None:
        self._slot: CaptureSlot | None = slot
        self._left = left

    def release(self) -> None:
        if self._slot is not None:
            self._left[0] -= 1
            if self._left[0] == 0:
                self._slot.release()
            self._slot = None


@dataclass
class CaptureGuard:
    """API key and concurrency limits for capturing requests (one per server)."""

    api_key: str | None
    max_concurrent: int  # 0 = unlimited
    active: int = 0
    rejected: int = 0

    def check_key(self, headers: Mapping[str, str]) -> None:
        if not self.api_key:
            return
        given = headers.get("x-attention-api-key")
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        for cand in (given, bearer):
            if cand and hmac.compare_digest(cand.encode(), self.api_key.encode()):
                return
        raise APIError(401, "attention capture requires a valid attention API key "
                       "(header X-Attention-API-Key or Authorization: Bearer)", "X-Attention-API-Key")

    def acquire(self) -> CaptureSlot:
        if self.max_concurrent and self.active >= self.max_concurrent:
            self.rejected += 1
            raise APIError(429, f"too many concurrent capture requests (limit {self.max_concurrent}); "
                           "retry later or send the request without capture", "return_attention_tokens")
        self.active += 1
        return CaptureSlot(self)


def capabilities(args: ServerArgs, model_info: Mapping[str, Any], reasoning_parser: str | None) -> dict[str, Any]:
    """Body of GET /v1/attention/capabilities."""
    L = int(model_info.get("num_layers", 0))
    allowed = capture_allowed(args)
    try:
        layers_default = resolve_layers(args.attention_capture_layers, L, "--attention-capture-layers") if L else []
    except APIError:
        layers_default = []
    return {
        "supported": allowed,
        "enabled": allowed,
        "modes": list(MODES) if allowed else [],
        "max_top_k": MAX_TOP_K_ATTENTION,
        "default_top_k": args.attention_tokens_top_k,
        "max_layers": L,
        "num_attention_heads": int(model_info.get("num_attention_heads", 0)),
        "default_mode": capture_mode(args),
        "capture_by_default": args.attention_capture_default != "off",
        "layers_default": layers_default,
        # what fingerprints and zones describe: version 2 leaves out the attention sink
        "fingerprint": {"versions": list(FINGERPRINT_VERSIONS), "default_version": args.attention_fingerprint_version,
                        "sink_tokens": args.attention_sink_tokens},
        # --attention-capture-default: what a request without capture fields gets (behind a
        # router that drops the fields, this is the only way to capture)
        "capture_default": args.attention_capture_default,
        "manifold_hints": {
            "enabled": args.attention_hints_url is not None,
            "refresh_interval_s": args.attention_hints_refresh_interval,
        },
        "adaptive_sampling": {
            "supported": allowed and args.attention_hints_url is not None,
            "default": bool(args.attention_adaptive_sampling),
            "steps": args.attention_adaptive_steps,
            "requires_mode": "fingerprint",
        },
        "features": {
            "include_prompt_attention": True,
            "head_filtering": True,
            "moe_routing": bool(model_info.get("is_moe", False)),
            "think_segmentation": reasoning_parser is not None,
            "logit_lens": allowed,
            "sidecar": args.attention_sidecar_url is not None,
        },
        "guardrails": {
            "max_concurrent_capture": args.attention_max_concurrent_capture,
            "requires_api_key": args.attention_api_key is not None,
            "system_prompt_masked": args.attention_mask_system_prompt,
            "disabled_in_production": args.attention_disable_in_production and os.environ.get(DEBUG_ENV) != "1",
        },
        "limits": {
            "max_top_k": MAX_TOP_K_ATTENTION,
            "max_steps": args.attention_tokens_max,
            "fingerprint_max_steps": args.attention_fingerprint_max_steps,
            "stride": args.attention_tokens_stride,
            "window": args.attention_tokens_window,
            "chunk_size": args.attention_chunk_size,
            "tp_size": args.tp_size,
            "heads_visible": "tp rank 0 only" if args.tp_size > 1 else "all",
            "replay_max_tokens": MAX_REPLAY_TOKENS,
            "replay_max_values": MAX_REPLAY_ELEMENTS,
        },
    }


class CapturePlacer:
    """Builds the per-chunk capture fields of one response.

    ``chunk(out, phases)`` takes one TokenizerManager yield and the phases of its new
    tokens and returns the fields to put on the choice: ``attention_tokens`` (entries
    of exactly these tokens, each tagged with think_phase when a parser is on),
    ``attention_output_tokens``, on the first chunk ``attention_prompt_tokens``, and
    ``attention_adaptive_sampling`` on the chunk where the sampling switch first shows and
    on the ``final`` chunk.
    """

    def __init__(self, tagging: bool) -> None:
        self.tagging = tagging
        self.step = 0  # decode step of the next new token
        self.first = True
        self.phase_by_step: dict[int, str] = {}
        self.switch: dict[str, Any] | None = None  # adaptive sampling switch, once reported

    def chunk(self, out: Mapping[str, Any], phases: list[str] | None, final: bool = False) -> dict[str, Any]:
        meta = out.get("meta_info", {})
        ids = out.get("new_token_ids") or []
        texts = out.get("token_texts") or []
        tokens = []
        for j, tid in enumerate(ids):
            t: dict[str, Any] = {"step": self.step + j, "id": int(tid), "text": texts[j] if j < len(texts) else ""}
            if self.tagging and phases is not None and j < len(phases):
                t["think_phase"] = phases[j]
                self.phase_by_step[self.step + j] = phases[j]
            tokens.append(t)
        self.step += len(ids)
        entries = list(meta.get("attention_tokens") or [])
        if self.tagging:
            for i, e in enumerate(entries):
                ds = e.get("decode_step")
                if ds is not None and ds in self.phase_by_step:
                    entries[i] = {**e, "think_phase": self.phase_by_step[ds]}
        fields: dict[str, Any] = {"attention_tokens": entries, "attention_output_tokens": tokens}
        if "logit_lens" in meta:
            fields["logit_lens"] = meta["logit_lens"]
        sw = meta.get("attention_adaptive_sampling")
        if sw is not None and self.switch is None:
            # the scheduler switched temperature/top_p to a manifold hint: say so on the
            # chunk where it first shows (the TokenizerManager repeats it on every later yield)
            self.switch = dict(sw)
            fields["attention_adaptive_sampling"] = self.switch
        elif final and self.switch is not None:
            # and again on the last chunk, so a client reading only the end sees it
            fields["attention_adaptive_sampling"] = self.switch
        if self.first:
            self.first = False
            prompt = meta.get("attention_prompt_tokens")
            if prompt is not None:
                fields["attention_prompt_tokens"] = prompt
        return fields
